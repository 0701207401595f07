"""Files attached to a question reach the model: an image as an image part (vision models only, else a clear
refusal before any turn starts), a document's text, read by the knowledge parsers, before the question, cut to fit
the model's context and saying so."""

from __future__ import annotations

import base64
import io

import docx
import grpc
import pytest

from tests.chat.conftest import register_fake_model
from tests.chat.helpers import chat_all, messages, new_session, reason
from typecase.v1 import chat_pb2, llm_pb2

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
FACT = "The secret launch code of project Heliotrope is AMBER-7731."


def docx_bytes(*paragraphs: str) -> bytes:
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def last_user_content(upstream):
    """What the turn's model call (the first request; a title request may follow) asked."""
    return next(m["content"] for m in reversed(upstream.requests[0]["messages"]) if m["role"] == "user")


async def test_an_image_reaches_a_vision_model_as_an_image_part(me, upstream):
    session = await new_session(me)
    await chat_all(
        me,
        session.id,
        "What is in this picture?",
        attachments=[chat_pb2.Attachment(name="dot.png", mime_type="image/png", data=PNG)],
    )
    content = last_user_content(upstream)
    assert content[0] == {"type": "text", "text": "What is in this picture?"}
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    stored = (await messages(me, session.id))[0]
    assert [a.name for a in stored.attachments] == ["dot.png"] and stored.content == "What is in this picture?"


async def test_an_image_for_a_model_without_vision_is_refused_before_the_turn(me, upstream):
    blind = await register_fake_model(me.llm, upstream.base_url, name="blind", make_default=False)
    await me.llm.UpdateModel(
        llm_pb2.UpdateModelRequest(
            model=llm_pb2.Model(id=blind.id, capabilities=llm_pb2.ModelCapabilities(vision=False)),
            update_mask={"paths": ["capabilities.vision"]},
        ),
        metadata=me.md,
    )
    session = await new_session(me, model_id=blind.id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat_all(me, session.id, "Look", attachments=[chat_pb2.Attachment(name="dot.png", data=PNG)])
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(refused.value) == "MODEL_CAPABILITY_MISSING" and "cannot see images" in refused.value.details()
    assert await messages(me, session.id) == [] and upstream.requests == []


async def test_a_document_is_read_into_the_prompt(me, upstream):
    session = await new_session(me)
    report = docx_bytes("Quarterly notes.", FACT, "Nothing else of note.")
    await chat_all(
        me, session.id, "What is the launch code?", attachments=[chat_pb2.Attachment(name="report.docx", data=report)]
    )
    prompt = last_user_content(upstream)
    assert 'Attached file "report.docx":' in prompt and FACT in prompt
    assert prompt.endswith("Question: What is the launch code?")
    assert (await messages(me, session.id))[0].content == "What is the launch code?"  # stored as asked


@pytest.mark.app_settings(chat_attachment_max_chars=300, chat_scratch_max_chars=0)
async def test_a_long_document_is_cut_and_the_prompt_says_so(me, upstream):
    session = await new_session(me)
    long_text = ("Filler sentence about nothing in particular. " * 40 + FACT).encode()
    await chat_all(
        me,
        session.id,
        "Anything secret?",
        attachments=[chat_pb2.Attachment(name="notes.txt", mime_type="text/plain", data=long_text)],
    )
    prompt = last_user_content(upstream)
    assert '"notes.txt" (cut: only its beginning is shown)' in prompt and FACT not in prompt
    assert len(prompt) < 300 + 200


async def test_an_unreadable_document_is_a_clear_error(me, upstream):
    session = await new_session(me)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat_all(
            me,
            session.id,
            "Read this",
            attachments=[chat_pb2.Attachment(name="broken.docx", data=b"PK\x03\x04 not a zip")],
        )
    assert reason(refused.value) == "PARSE_FAILED" and "broken.docx" in refused.value.details()
    assert upstream.requests == []


async def download(who, message_id: str, index: int, **kw) -> bytes:
    return b"".join(
        [
            m.data
            async for m in who.chat.DownloadAttachment(
                chat_pb2.DownloadAttachmentRequest(message_id=message_id, index=index, **kw), metadata=who.md
            )
        ]
    )


async def test_a_stored_attachment_is_downloadable_by_the_sessions_owner_only(chat_app, alice, bob, upstream):
    import httpx

    session = await new_session(alice)
    notes = ("Attached notes. " * 300 + FACT).encode()
    await chat_all(
        alice,
        session.id,
        "Anything secret?",
        attachments=[
            chat_pb2.Attachment(name="dot.png", mime_type="image/png", url="https://example.com/dot.png"),
            chat_pb2.Attachment(name="notes été.txt", mime_type="text/plain", data=notes),
        ],
    )
    question = (await messages(alice, session.id))[0]
    assert await download(alice, question.id, 1) == notes
    assert await download(alice, question.id, 1, range="bytes=100-149") == notes[100:150]
    for who, index in ((bob, 1), (alice, 0), (alice, 2)):  # another user; a URL (no stored copy); no such file
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await download(who, question.id, index)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND, (who.user_id, index)

    url = f"http://127.0.0.1:{chat_app.http_port}/v1/messages/{question.id}/attachments/1:download"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(url, headers={**dict(alice.md), "range": "bytes=-len".replace("len", str(len(FACT)))})
        assert r.status_code == 206 and r.content == FACT.encode()
        assert r.headers["content-disposition"].endswith("filename*=UTF-8''notes%20%C3%A9t%C3%A9.txt")
        r = await http.get(url, headers=dict(bob.md))
        assert r.status_code == 404
