"""Retrieval quality through the real App (issue 23 item 1): default chunks fit the embedding model's window, a
chunk longer than the window is embedded in windows rather than truncated, previews count the model's own tokens,
and hybrid search leans on keywords when the model cannot read the query's language."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY
from typecase.v1 import knowledge_pb2 as pb
from typecase.v1 import knowledge_pb2_grpc

from .support import bearer, create_kb, search, wait_done

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = bearer(ADMIN_KEY)
PLANTED = "The secret launch code of project Heliotrope is AMBER-7731."
SEEDS = Path("/work/shared/seeds")


@pytest.fixture(scope="module")
def stub(kchannel):
    return knowledge_pb2_grpc.KnowledgeServiceStub(kchannel)


def planted_markdown(position: int = 130) -> str:
    """200 short paragraphs with the planted sentence at `position`: under the old default (500 tokens, MiniLM
    reading only the first 256 word pieces) the sentence sits past the window and vector search ranked it 6th."""
    rng = random.Random(7)
    subjects = [
        "The warehouse",
        "Our team",
        "The library",
        "The garden committee",
        "The city council",
        "A local bakery",
        "The museum",
        "The cycling club",
        "The school board",
        "The weather station",
    ]
    verbs = ["reported", "announced", "discussed", "reviewed", "planned", "postponed", "celebrated", "measured"]
    objects = [
        "new opening hours",
        "a budget for next spring",
        "the annual picnic",
        "rainfall in April",
        "repairs to the roof",
        "a volunteer program",
        "the parking rules",
        "an exhibition of old maps",
        "the bread prices",
        "a charity run",
    ]
    paras = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} on day {i}. Details follow in the minutes."
        for i in range(200)
    ]
    paras[position] = PLANTED
    return "# Minutes\n\n" + "\n\n".join(paras)


async def add_text(stub, kb_id: str, name: str, text: str, **kw) -> pb.KnowledgeFile:
    reply = await stub.AddTextFile(pb.AddTextFileRequest(kb_id=kb_id, name=name, text=text, **kw), metadata=ADMIN)
    done = await wait_done(stub, ADMIN, reply.file.id)
    assert done.status == pb.FILE_STATUS_DONE, done.error
    return done


async def test_the_planted_fact_is_the_first_vector_hit_with_default_settings(stub):
    kb = await create_kb(stub, ADMIN, "planted")
    await add_text(stub, kb.id, "minutes.md", planted_markdown())
    hits = await search(stub, ADMIN, [kb.id], "secret launch code for Heliotrope", mode=pb.SEARCH_MODE_VECTOR)
    assert "AMBER-7731" in hits[0].text
    for mode in (pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_HYBRID):
        hits = await search(stub, ADMIN, [kb.id], "secret launch code for Heliotrope", mode=mode)
        assert "AMBER-7731" in hits[0].text


async def test_a_chunk_longer_than_the_window_is_embedded_in_windows_and_found_as_the_chunk(stub):
    # One 1,500-token chunk: the planted sentence is at its end, far past MiniLM's 256 word pieces.
    text = planted_markdown(position=199)
    kb = await create_kb(stub, ADMIN, "long-chunks", chunking_rule=pb.ChunkingRule(chunk_size=8000))
    file = await add_text(stub, kb.id, "minutes.md", text)
    assert file.chunk_count == 1
    hits = await search(stub, ADMIN, [kb.id], "secret launch code for Heliotrope", mode=pb.SEARCH_MODE_VECTOR)
    assert len(hits) == 1 and hits[0].chunk_index == 0 and hits[0].text.endswith(PLANTED)
    preview = await stub.PreviewChunks(pb.PreviewChunksRequest(kb_id=kb.id, text=text), metadata=ADMIN)
    [chunk] = preview.chunks
    assert chunk.model_token_count > preview.window_tokens and chunk.embedding_windows > 1


async def test_preview_counts_tokens_in_the_models_own_tokenizer(stub):
    kb = await create_kb(stub, ADMIN, "preview-tokens")
    preview = await stub.PreviewChunks(
        pb.PreviewChunksRequest(kb_id=kb.id, text="Tokenization of antidisestablishmentarianism.\n\n" + "word " * 600),
        metadata=ADMIN,
    )
    assert preview.window_tokens == 256 and preview.model_tokens_exact
    first = preview.chunks[0]
    # [CLS] token ##ization of anti ##dis ##est ##ab ##lish ##ment ##arian ##ism . [SEP]: more word pieces
    # than Typecase tokens ("Tokenization", "of", "antidisestablishmentarianism", ".")
    assert first.token_count == 4 and first.model_token_count > 8
    assert all(c.model_token_count <= preview.window_tokens and c.embedding_windows == 1 for c in preview.chunks)
    assert preview.chunks[1].start_offset > 0 and preview.chunks[1].end_offset > preview.chunks[1].start_offset


@pytest.mark.skipif(not SEEDS.exists(), reason="the shared seed documents are not here")
async def test_hybrid_leans_on_keywords_when_the_model_does_not_cover_the_querys_language(stub):
    kb = await create_kb(stub, ADMIN, "chinese")
    for path in sorted(SEEDS.glob("00[04]_*.txt")):
        await add_text(stub, kb.id, path.name, path.read_text(encoding="utf-8"))
    query = "推理服务在上游模型连续失败时怎样熔断和降级"
    keyword = await search(stub, ADMIN, [kb.id], query, mode=pb.SEARCH_MODE_KEYWORD, top_k=5)
    hybrid = await search(stub, ADMIN, [kb.id], query, mode=pb.SEARCH_MODE_HYBRID, top_k=5)
    assert len(keyword) == 5
    assert [h.chunk_id for h in hybrid] == [h.chunk_id for h in keyword]
    # An explicit weight is the caller's choice and is kept.
    forced = await search(stub, ADMIN, [kb.id], query, mode=pb.SEARCH_MODE_HYBRID, top_k=5, vector_weight=1.0)
    vector = await search(stub, ADMIN, [kb.id], query, mode=pb.SEARCH_MODE_VECTOR, top_k=5)
    assert [h.chunk_id for h in forced] == [h.chunk_id for h in vector]
