"""Uploads from a path with progress, waiting for processing with WatchFile, and search, through the SDK."""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN_KEY
from typecase.client import MAX_CHUNK_BYTES, AsyncClient, UploadProgress
from typecase.v1 import knowledge_pb2

FACT = "The lighthouse on Quillon Point was painted indigo in 1887 by keeper Ada Marrow."


def handbook(tmp_path, name: str = "handbook.txt"):
    filler = "\n\n".join(
        f"Section {i}: routine maintenance notes about lamps, lenses and weather logs." for i in range(60)
    )
    path = tmp_path / name
    path.write_text(f"{filler}\n\n{FACT}\n")
    return path


def test_upload_with_progress_then_wait_and_search(client, tmp_path):
    kb = client.knowledge.create_knowledge_base("sdk handbook")
    path = handbook(tmp_path)
    size = path.stat().st_size
    seen: list[UploadProgress] = []

    uploaded = client.knowledge.upload(kb.id, path, chunk_size=1024, tags=["manual"], progress=seen.append)

    assert uploaded.name == "handbook.txt" and uploaded.size_bytes == size and uploaded.kb_id == kb.id
    sent = [p.sent_bytes for p in seen]
    assert sent[0] == 0 and sent[-1] == size and sent == sorted(sent)
    assert len(seen) >= size // 1024  # one report per bounded chunk
    assert max(b - a for a, b in zip(sent, sent[1:])) <= 1024
    assert seen[-1].percent == 100.0 and seen[-1].total_bytes == size

    statuses: list[int] = []
    done = client.knowledge.wait_until_done(uploaded.id, timeout=60, on_update=lambda u: statuses.append(u.status))
    assert done.status == knowledge_pb2.FILE_STATUS_DONE and done.chunk_count > 0
    assert statuses[-1] == knowledge_pb2.FILE_STATUS_DONE

    hits = client.knowledge.search(kb.id, "Who painted the Quillon Point lighthouse indigo?", top_k=3).hits
    assert hits and hits[0].file_id == uploaded.id and "Ada Marrow" in hits[0].text
    assert [f.id for f in client.knowledge.list_files(kb.id)] == [uploaded.id]


def test_a_progress_callback_that_raises_cancels_the_upload(client, tmp_path):
    kb = client.knowledge.create_knowledge_base("sdk aborted")

    class Abort(Exception):
        pass

    def abort_halfway(progress: UploadProgress) -> None:
        if progress.fraction is not None and progress.fraction > 0.5:
            raise Abort

    with pytest.raises(Abort):
        client.knowledge.upload(kb.id, handbook(tmp_path), chunk_size=512, progress=abort_halfway)
    assert list(client.knowledge.list_files(kb.id)) == []  # nothing half-uploaded was kept


def test_chunk_size_is_bounded(client, tmp_path):
    with pytest.raises(ValueError):
        client.knowledge.upload("kb", handbook(tmp_path), chunk_size=MAX_CHUNK_BYTES + 1)


async def test_async_upload_and_wait(hosted, tmp_path):
    async with AsyncClient(hosted.target, api_key=ADMIN_KEY) as client:
        kb = await client.knowledge.create_knowledge_base("sdk async handbook")
        seen: list[UploadProgress] = []
        uploaded = await client.knowledge.upload(
            kb.id, b"Async notes: " + FACT.encode(), file_name="notes.md", progress=seen.append
        )
        assert seen[-1].fraction == 1.0
        done = await client.knowledge.wait_until_done(uploaded.id, timeout=60)
        assert done.status == knowledge_pb2.FILE_STATUS_DONE
        result = await client.knowledge.search([kb.id], "indigo lighthouse keeper", mode="keyword")
        assert result.hits and result.hits[0].file_id == uploaded.id


def test_question_answer_base_and_file_download(client, tmp_path):
    """A "qa" base answers a question by its pair; a file's bytes come back whole or as one range."""
    qa = client.knowledge.create_knowledge_base("sdk faq", kind="qa")
    assert qa.kind == knowledge_pb2.KNOWLEDGE_BASE_KIND_QA
    pair = client.knowledge.create_qa_pair(
        qa.id,
        "When is the lighthouse open to visitors?",
        "Saturdays from ten to four.",
        similar_questions=["Lighthouse hours?"],
    )
    assert pair.kb_id == qa.id and list(pair.similar_questions) == ["Lighthouse hours?"]
    hits = client.knowledge.search(qa.id, "When can I visit the lighthouse?", top_k=1).hits
    assert hits and hits[0].text == "Saturdays from ten to four."
    with pytest.raises(ValueError, match="kind must be one of"):
        client.knowledge.create_knowledge_base("sdk bad kind", kind="faq")

    docs = client.knowledge.create_knowledge_base("sdk downloads")
    path = handbook(tmp_path)
    uploaded = client.knowledge.upload(docs.id, path)
    data = path.read_bytes()
    assert client.knowledge.download_file(uploaded.id) == data
    assert client.knowledge.download_file(uploaded.id, byte_range="bytes=10-29") == data[10:30]
