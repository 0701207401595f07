"""Question-answer knowledge bases through the real App over gRPC (issue 23 item 2): 100 pairs imported from an
xlsx table, a paraphrased question returns the right answer first (local MiniLM embeddings); pairs written by hand
are found, edited and deleted with exact indexes; the base's kind is enforced; a bad table fails naming its row."""

from __future__ import annotations

import csv
import io

import grpc
import pytest

from tests.conftest import ADMIN_KEY
from typecase.v1 import knowledge_pb2 as pb
from typecase.v1 import knowledge_pb2_grpc

from .support import bearer, create_kb, file_reason, reason, search, upload, wait_done

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = bearer(ADMIN_KEY)

SUBJECTS = [
    "parking permit",
    "laptop",
    "expense report",
    "health insurance card",
    "office key",
    "vacation days",
    "company phone",
    "visitor badge",
    "printer",
    "VPN access",
    "desk booking",
    "training budget",
    "payslip",
    "pension plan",
    "bicycle allowance",
    "security training",
    "meeting room",
    "team offsite",
    "mentor",
    "sabbatical",
    "overtime pay",
    "relocation package",
    "gym membership",
    "lunch voucher",
    "shuttle bus",
    "monitor",
    "standing desk",
    "software licence",
    "email signature",
    "business card",
    "travel visa",
    "hotel booking",
    "flight ticket",
    "rental car",
    "per diem",
    "corporate credit card",
    "mobile data plan",
    "home office stipend",
    "ergonomic chair",
    "headset",
    "password manager",
    "two-factor token",
    "code review",
    "production deploy",
    "on-call rotation",
    "incident report",
    "customer refund",
    "contract renewal",
    "purchase order",
    "supplier invoice",
    "tax form",
    "bonus payment",
    "stock options",
    "performance review",
    "promotion",
    "job referral",
    "internship",
    "exit interview",
    "reference letter",
    "name badge",
    "locker",
    "mailroom parcel",
    "fire drill",
    "first aid kit",
    "lost and found",
    "coat check",
    "kitchen fridge",
    "coffee machine",
    "recycling bins",
    "plant watering",
    "whiteboard markers",
    "projector",
    "video call camera",
    "conference ticket",
    "book club",
    "language course",
    "sign language class",
    "child care subsidy",
    "parental leave",
    "sick leave",
    "jury duty leave",
    "volunteering day",
    "blood donation",
    "wellness day",
    "flu vaccine",
    "eye test",
    "dental plan",
    "counselling service",
    "legal advice line",
    "moving day",
    "wedding leave",
    "bereavement leave",
    "public holiday",
    "time sheet",
    "shift swap",
    "night shift",
    "weekend work",
    "dress code",
    "pet policy",
    "smoking area",
]
TEMPLATES = [
    "How do I apply for a {s}?",
    "Who is responsible for the {s}?",
    "What are the rules for the {s}?",
    "Where do I ask about my {s}?",
]
PAIRS = [
    (TEMPLATES[i % 4].format(s=s), f"ANSWER-{i:03d}: everything about the {s} is handled by desk {i}.")
    for i, s in enumerate(SUBJECTS)
]
# paraphrases sharing few words with their question
PARAPHRASES = {
    "parking permit": "how can I get permission to park my car at the office",
    "vacation days": "which person is in charge of the holiday days I can take",
    "gym membership": "can I get access to a fitness club through work",
    "flu vaccine": "how can I get my influenza shot",
    "dress code": "what clothes am I allowed to wear in the office",
}


def xlsx_of(rows: list[list[str]]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def stub(kchannel):
    return knowledge_pb2_grpc.KnowledgeServiceStub(kchannel)


async def qa_base(stub, name: str) -> pb.KnowledgeBase:
    kb = await create_kb(stub, ADMIN, name, kind=pb.KNOWLEDGE_BASE_KIND_QA)
    assert kb.kind == pb.KNOWLEDGE_BASE_KIND_QA
    return kb


async def test_100_pairs_imported_from_xlsx_and_a_paraphrased_question_returns_the_right_answer_first(stub):
    kb = await qa_base(stub, "faq")
    data = xlsx_of([["Question", "Answer", "Similar questions"]] + [[q, a, ""] for q, a in PAIRS])
    file = await wait_done(stub, ADMIN, (await upload(stub, ADMIN, kb.id, "faq.xlsx", data)).id)
    assert file.status == pb.FILE_STATUS_DONE, file.error
    assert file.chunk_count == 100
    listed = await stub.ListQAPairs(pb.ListQAPairsRequest(kb_id=kb.id, page_size=500), metadata=ADMIN)
    assert listed.total_size == 100
    by_answer = {p.answer: p for p in listed.qa_pairs}
    assert set(by_answer) == {a for _, a in PAIRS}

    wrong = []
    for subject, paraphrase in PARAPHRASES.items():
        question, answer = PAIRS[SUBJECTS.index(subject)]
        for mode in (pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_VECTOR):
            hits = await search(stub, ADMIN, [kb.id], paraphrase, mode=mode)
            if hits[0].text != answer:
                wrong.append((mode, paraphrase, [h.question for h in hits]))
            else:
                assert hits[0].qa_pair_id == by_answer[answer].id and hits[0].question == question
    assert wrong == []
    # the answer's own words are not what is matched: "handled" is in every answer, in no question
    hits = await search(stub, ADMIN, [kb.id], "handled", mode=pb.SEARCH_MODE_KEYWORD)
    assert hits == []


async def test_hand_written_pairs_are_found_edited_and_deleted_on_both_indexes(stub):
    kb = await qa_base(stub, "hand")
    pair = (
        await stub.CreateQAPair(
            pb.CreateQAPairRequest(
                kb_id=kb.id,
                qa_pair=pb.QAPair(
                    question="How do I reset my password?",
                    similar_questions=["I forgot my login secret"],
                    answer="Use the 'forgot password' link on the sign-in page.",
                ),
            ),
            metadata=ADMIN,
        )
    ).qa_pair
    other = (
        await stub.CreateQAPair(
            pb.CreateQAPairRequest(
                kb_id=kb.id, qa_pair=pb.QAPair(question="When is the canteen open?", answer="From 11:30 to 14:00.")
            ),
            metadata=ADMIN,
        )
    ).qa_pair
    assert pair.similar_questions == ["I forgot my login secret"] and pair.file_id == other.file_id

    # matched on a similar question too, by keyword and by vector
    [hit] = await search(stub, ADMIN, [kb.id], "login secret", mode=pb.SEARCH_MODE_KEYWORD)
    assert hit.qa_pair_id == pair.id and hit.text.startswith("Use the 'forgot password'")
    assert (await search(stub, ADMIN, [kb.id], "lunch hours of the cafeteria", mode=pb.SEARCH_MODE_VECTOR))[
        0
    ].qa_pair_id == other.id

    updated = (
        await stub.UpdateQAPair(
            pb.UpdateQAPairRequest(
                qa_pair=pb.QAPair(
                    id=pair.id, question="How do I unlock my account?", answer="Call the service desk on 4321."
                )
            ),
            metadata=ADMIN,
        )
    ).qa_pair
    assert updated.question == "How do I unlock my account?" and updated.similar_questions == [
        "I forgot my login secret"
    ]  # not in the mask: kept
    assert await search(stub, ADMIN, [kb.id], "reset password", mode=pb.SEARCH_MODE_KEYWORD) == []
    [hit] = await search(stub, ADMIN, [kb.id], "unlock account", mode=pb.SEARCH_MODE_KEYWORD)
    assert hit.text == "Call the service desk on 4321." and hit.question == "How do I unlock my account?"
    got = (await stub.GetQAPair(pb.GetQAPairRequest(pair_id=pair.id), metadata=ADMIN)).qa_pair
    assert got.answer == "Call the service desk on 4321."

    # a rebuild (reprocess, or a new embedding model) re-indexes hand-written pairs in place: nothing is lost
    await stub.ReprocessFile(pb.ReprocessFileRequest(file_id=pair.file_id), metadata=ADMIN)
    rebuilt = await wait_done(stub, ADMIN, pair.file_id)
    assert rebuilt.status == pb.FILE_STATUS_DONE and rebuilt.chunk_count == 2, rebuilt.error
    [hit] = await search(stub, ADMIN, [kb.id], "unlock account", mode=pb.SEARCH_MODE_KEYWORD)
    assert hit.qa_pair_id == pair.id
    assert (await search(stub, ADMIN, [kb.id], "lunch hours of the cafeteria", mode=pb.SEARCH_MODE_VECTOR))[
        0
    ].qa_pair_id == other.id
    with pytest.raises(grpc.aio.AioRpcError) as err:  # no original to download
        async for _ in stub.DownloadFile(pb.DownloadFileRequest(file_id=pair.file_id), metadata=ADMIN):
            pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await stub.DeleteQAPair(pb.DeleteQAPairRequest(pair_id=pair.id), metadata=ADMIN)
    assert await search(stub, ADMIN, [kb.id], "unlock account login secret", mode=pb.SEARCH_MODE_KEYWORD) == []
    hits = await search(stub, ADMIN, [kb.id], "How do I unlock my account?", mode=pb.SEARCH_MODE_VECTOR, top_k=10)
    assert [h.qa_pair_id for h in hits] == [other.id]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetQAPair(pb.GetQAPairRequest(pair_id=pair.id), metadata=ADMIN)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_kind_of_a_base_is_enforced_and_pairs_are_validated(stub):
    docs = await create_kb(stub, ADMIN, "docs-not-qa")
    assert docs.kind == pb.KNOWLEDGE_BASE_KIND_DOCUMENTS
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateQAPair(
            pb.CreateQAPairRequest(kb_id=docs.id, qa_pair=pb.QAPair(question="q?", answer="a")), metadata=ADMIN
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err.value) == "WRONG_KNOWLEDGE_BASE_KIND"

    kb = await qa_base(stub, "kinds")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AddTextFile(pb.AddTextFileRequest(kb_id=kb.id, name="notes.txt", text="hello"), metadata=ADMIN)
    assert reason(err.value) == "WRONG_KNOWLEDGE_BASE_KIND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateQAPair(
            pb.CreateQAPairRequest(kb_id=kb.id, qa_pair=pb.QAPair(question="no answer?")), metadata=ADMIN
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "qa_pair.answer" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateQAPair(
            pb.CreateQAPairRequest(kb_id=kb.id, qa_pair=pb.QAPair(question="q" * 2001, answer="a")), metadata=ADMIN
        )
    assert "at most 2000 characters" in err.value.details()

    # a csv (no header: question, answer, similar...) with a row lacking its answer fails naming the row
    text = io.StringIO()
    csv.writer(text).writerows([["Is it raining?", "Yes."], ["Is it snowing?", ""]])
    bad = await wait_done(stub, ADMIN, (await upload(stub, ADMIN, kb.id, "bad.csv", text.getvalue().encode())).id)
    assert bad.status == pb.FILE_STATUS_FAILED and file_reason(bad) == "PARSE_FAILED"
    assert "row 2" in bad.error.message


async def test_edited_and_added_pairs_survive_reprocessing_the_imported_table(stub):
    kb = await qa_base(stub, "reprocessed")
    rows = [[q, a, ""] for q, a in PAIRS[:5]]
    file = await wait_done(stub, ADMIN, (await upload(stub, ADMIN, kb.id, "faq.xlsx", xlsx_of(rows))).id)
    listed = (await stub.ListQAPairs(pb.ListQAPairsRequest(kb_id=kb.id), metadata=ADMIN)).qa_pairs
    third = next(p for p in listed if p.question == PAIRS[2][0])
    await stub.UpdateQAPair(
        pb.UpdateQAPairRequest(
            qa_pair=pb.QAPair(id=third.id, answer="ANSWER-EDITED: ask the front desk."),
            update_mask={"paths": ["answer"]},
        ),
        metadata=ADMIN,
    )
    await stub.CreateQAPair(
        pb.CreateQAPairRequest(
            kb_id=kb.id,
            qa_pair=pb.QAPair(question="Where is the lost property office?", answer="ANSWER-ADDED: in the basement."),
        ),
        metadata=ADMIN,
    )

    await stub.ReprocessFile(pb.ReprocessFileRequest(file_id=file.id), metadata=ADMIN)
    assert (await wait_done(stub, ADMIN, file.id)).status == pb.FILE_STATUS_DONE
    after = (await stub.ListQAPairs(pb.ListQAPairsRequest(kb_id=kb.id, page_size=50), metadata=ADMIN)).qa_pairs
    answers = [p.answer for p in after]
    assert PAIRS[2][1] not in answers and answers.count("ANSWER-EDITED: ask the front desk.") == 1
    assert "ANSWER-ADDED: in the basement." in answers and len(after) == 6
    assert next(p for p in after if p.question == PAIRS[2][0]).id == third.id  # in its place
    hits = await search(stub, ADMIN, [kb.id], PAIRS[2][0], mode=pb.SEARCH_MODE_KEYWORD)
    assert hits[0].text == "ANSWER-EDITED: ask the front desk."
