"""Chunk curation and original-file download through the real App over gRPC (issue 23 item 2): an edited chunk is
found by its new text and no longer by its old one, in vector and keyword search; deleted and added chunks leave
and join both indexes; chunks carry offsets into the extracted text; a byte range downloads exactly those bytes."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import ADMIN_KEY
from typecase.v1 import knowledge_pb2 as pb
from typecase.v1 import knowledge_pb2_grpc

from .support import bearer, create_kb, new_user, reason, search, upload, wait_done

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = bearer(ADMIN_KEY)

PARAGRAPHS = [
    "The blue heron nests by the quarry lake every spring and feeds on small fish near the reeds.",
    "Our accounting team closes the books on the third working day of each month.",
    "The library lends laptops to students for up to two weeks at a time.",
    "Bicycles must be parked in the racks behind the main building, never in the corridors.",
    "The cafeteria serves vegetarian soup on Tuesdays and fish on Fridays.",
    "Visitors sign in at the front desk and wear a badge while they are on site.",
]
TEXT = "\n\n".join(PARAGRAPHS)
OLD_QUERY, NEW_QUERY = "where does the heron nest", "when can the public look through the telescope"
NEW_TEXT = "The observatory opens its rooftop telescope to the public on clear Saturday nights."


@pytest.fixture(scope="module")
def stub(kchannel):
    return knowledge_pb2_grpc.KnowledgeServiceStub(kchannel)


async def base_with_file(stub, name: str) -> tuple[pb.KnowledgeBase, pb.KnowledgeFile]:
    kb = await create_kb(stub, ADMIN, name, chunking_rule=pb.ChunkingRule(chunk_size=20, chunk_overlap=0))
    reply = await stub.AddTextFile(pb.AddTextFileRequest(kb_id=kb.id, name="notes.txt", text=TEXT), metadata=ADMIN)
    file = await wait_done(stub, ADMIN, reply.file.id)
    assert file.status == pb.FILE_STATUS_DONE and file.chunk_count == len(PARAGRAPHS)
    return kb, file


async def chunks_of(stub, kb_id: str, **kw) -> list[pb.Chunk]:
    return list((await stub.ListChunks(pb.ListChunksRequest(kb_id=kb_id, **kw), metadata=ADMIN)).chunks)


def score_of(hits, chunk_id: str) -> float:
    return next((h.vector_score for h in hits if h.chunk_id == chunk_id), 0.0)


async def test_an_edited_chunk_is_found_by_its_new_text_and_not_its_old_on_vector_and_keyword_search(stub):
    kb, file = await base_with_file(stub, "edit")
    [heron] = await chunks_of(stub, kb.id, keyword="HERON")
    before = await search(stub, ADMIN, [kb.id], OLD_QUERY, mode=pb.SEARCH_MODE_VECTOR, top_k=10)
    assert before[0].chunk_id == heron.id
    assert (await search(stub, ADMIN, [kb.id], "heron quarry", mode=pb.SEARCH_MODE_KEYWORD))[0].chunk_id == heron.id

    updated = (
        await stub.UpdateChunk(pb.UpdateChunkRequest(chunk=pb.Chunk(id=heron.id, text=NEW_TEXT)), metadata=ADMIN)
    ).chunk
    assert updated.text == NEW_TEXT and updated.edited and updated.index == heron.index

    # new text: first by vector and by keyword
    assert (await search(stub, ADMIN, [kb.id], NEW_QUERY, mode=pb.SEARCH_MODE_VECTOR))[0].chunk_id == heron.id
    assert (await search(stub, ADMIN, [kb.id], "observatory telescope", mode=pb.SEARCH_MODE_KEYWORD))[
        0
    ].chunk_id == heron.id
    # old text: gone from the keyword index, and the chunk's vector no longer matches the old question
    assert await search(stub, ADMIN, [kb.id], "heron quarry", mode=pb.SEARCH_MODE_KEYWORD) == []
    # (in six paragraphs something ranks first; what matters is that no vector of the old text is left)
    after = await search(stub, ADMIN, [kb.id], OLD_QUERY, mode=pb.SEARCH_MODE_VECTOR, top_k=10)
    assert score_of(after, heron.id) < score_of(before, heron.id) - 0.2
    assert len(after) == len(PARAGRAPHS)  # one vector a chunk: the old one was replaced, not kept beside
    # the other chunks are untouched in both indexes
    assert (await search(stub, ADMIN, [kb.id], "laptops students", mode=pb.SEARCH_MODE_KEYWORD))[0].text == PARAGRAPHS[
        2
    ]
    got = (await stub.GetChunk(pb.GetChunkRequest(chunk_id=heron.id), metadata=ADMIN)).chunk
    assert got.text == NEW_TEXT and got.file_name == "notes.txt"


async def test_deleted_and_added_chunks_leave_and_join_both_indexes(stub):
    kb, file = await base_with_file(stub, "delete-add")
    [bikes] = await chunks_of(stub, kb.id, keyword="bicycles")
    await stub.DeleteChunk(pb.DeleteChunkRequest(chunk_id=bikes.id), metadata=ADMIN)
    assert await search(stub, ADMIN, [kb.id], "bicycles racks", mode=pb.SEARCH_MODE_KEYWORD) == []
    hits = await search(stub, ADMIN, [kb.id], "where should I park my bicycle", mode=pb.SEARCH_MODE_VECTOR, top_k=10)
    assert bikes.id not in {h.chunk_id for h in hits} and len(hits) == len(PARAGRAPHS) - 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetChunk(pb.GetChunkRequest(chunk_id=bikes.id), metadata=ADMIN)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    added = (
        await stub.AddChunk(pb.AddChunkRequest(file_id=file.id, chunk=pb.Chunk(text=NEW_TEXT, page=3)), metadata=ADMIN)
    ).chunk
    assert added.index == len(PARAGRAPHS) and added.page == 3 and added.edited and added.start_offset == 0
    assert (await search(stub, ADMIN, [kb.id], "observatory telescope", mode=pb.SEARCH_MODE_KEYWORD))[
        0
    ].chunk_id == added.id
    assert (await search(stub, ADMIN, [kb.id], NEW_QUERY, mode=pb.SEARCH_MODE_VECTOR))[0].chunk_id == added.id
    got = (await stub.GetFile(pb.GetFileRequest(file_id=file.id), metadata=ADMIN)).file
    assert got.chunk_count == len(PARAGRAPHS)  # one deleted, one added


async def test_chunks_list_by_file_and_keyword_in_pages_with_offsets_into_the_text(stub):
    kb, file = await base_with_file(stub, "list")
    other = await stub.AddTextFile(
        pb.AddTextFileRequest(kb_id=kb.id, name="other.txt", text="Heron facts only."), metadata=ADMIN
    )
    await wait_done(stub, ADMIN, other.file.id)
    listed, token = [], ""
    while True:
        reply = await stub.ListChunks(
            pb.ListChunksRequest(kb_id=kb.id, file_id=file.id, page_size=4, page_token=token), metadata=ADMIN
        )
        assert reply.total_size == len(PARAGRAPHS)
        listed += reply.chunks
        token = reply.next_page_token
        if not token:
            break
    assert [c.index for c in listed] == list(range(len(PARAGRAPHS)))
    for c in listed:
        assert TEXT[c.start_offset : c.end_offset] == c.text and c.file_id == file.id
    assert {c.file_id for c in await chunks_of(stub, kb.id, keyword="heron")} == {file.id, other.file.id}
    hit = (await search(stub, ADMIN, [kb.id], "cafeteria soup", mode=pb.SEARCH_MODE_KEYWORD))[0]
    assert hit.file_id == file.id and TEXT[hit.start_offset : hit.end_offset] == PARAGRAPHS[4]


async def test_chunk_edits_are_validated_and_limited_to_the_owner(stub, kchannel):
    kb, file = await base_with_file(stub, "validate")
    [first] = await chunks_of(stub, kb.id, keyword="heron")
    for chunk, field in (
        (pb.Chunk(id=first.id, text="   "), "chunk.text"),
        (pb.Chunk(id=first.id, text="x" * 40_000), "chunk.text"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UpdateChunk(pb.UpdateChunkRequest(chunk=chunk), metadata=ADMIN)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
    from google.protobuf import field_mask_pb2

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateChunk(
            pb.UpdateChunkRequest(
                chunk=pb.Chunk(id=first.id, file_id="x"), update_mask=field_mask_pb2.FieldMask(paths=["file_id"])
            ),
            metadata=ADMIN,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "file_id" in err.value.details()
    from typecase.v1 import auth_pb2_grpc

    stranger = await new_user(auth_pb2_grpc.AuthServiceStub(kchannel), ADMIN, "chunk-stranger")
    for call in (
        stub.GetChunk(pb.GetChunkRequest(chunk_id=first.id), metadata=stranger),
        stub.UpdateChunk(pb.UpdateChunkRequest(chunk=pb.Chunk(id=first.id, text="mine now")), metadata=stranger),
        stub.DeleteChunk(pb.DeleteChunkRequest(chunk_id=first.id), metadata=stranger),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    got = (await stub.GetChunk(pb.GetChunkRequest(chunk_id=first.id), metadata=ADMIN)).chunk
    assert got.text == first.text


async def download(stub, md, file_id: str, **kw) -> tuple[bytes, dict[str, str], str]:
    call = stub.DownloadFile(pb.DownloadFileRequest(file_id=file_id, **kw), metadata=md)
    parts = [m async for m in call]
    headers = dict(await call.trailing_metadata())
    return b"".join(p.data for p in parts), headers, parts[0].content_type


async def test_download_returns_the_original_and_exactly_the_requested_byte_range(stub):
    kb = await create_kb(stub, ADMIN, "download")
    data = bytes(range(256)) * 1200  # 300 KiB, several storage pieces
    file = await upload(stub, ADMIN, kb.id, "numbers.csv", b"n\n" + data.replace(b"\n", b" "))
    original = b"n\n" + data.replace(b"\n", b" ")
    body, headers, content_type = await download(stub, ADMIN, file.id)
    assert body == original and content_type == file.mime_type
    assert headers["content-disposition"] == "attachment; filename=\"numbers.csv\"; filename*=UTF-8''numbers.csv"
    for spec, expected in (
        ("bytes=0-99", original[:100]),
        ("bytes=70000-200000", original[70000:200001]),
        ("bytes=300000-", original[300000:]),
        ("bytes=-10", original[-10:]),
        ("bytes=5-5", original[5:6]),
        (f"bytes=10-{10**9}", original[10:]),
    ):
        body, headers, _ = await download(stub, ADMIN, file.id, range=spec, inline=True)
        assert body == expected, spec
        assert headers["content-disposition"].startswith("inline;")
    _, headers, _ = await download(stub, ADMIN, file.id, range="bytes=100-199")
    assert headers["content-range"] == f"bytes 100-199/{len(original)}"
    for spec, code in (
        ("bytes=abc", grpc.StatusCode.INVALID_ARGUMENT),
        ("items=0-1", grpc.StatusCode.INVALID_ARGUMENT),
        (f"bytes={len(original)}-", grpc.StatusCode.OUT_OF_RANGE),
        ("bytes=9-3", grpc.StatusCode.OUT_OF_RANGE),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await download(stub, ADMIN, file.id, range=spec)
        assert err.value.code() == code, spec
        assert "range" in err.value.details()
    assert reason(err.value) == "INVALID_ARGUMENT"


async def test_over_http_a_range_downloads_exactly_those_bytes_and_a_patch_edits_a_chunk(kapp, stub):
    import httpx

    kb, file = await base_with_file(stub, "http-curation")
    base = f"http://127.0.0.1:{kapp.http_port}"
    async with httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as http:
        r = await http.get(f"/v1/files/{file.id}:download", params={"range": "bytes=4-18"})
        assert r.status_code == 206 and r.content == TEXT.encode()[4:19]
        assert r.headers["content-type"].startswith("text/plain")
        r = await http.get(f"/v1/files/{file.id}:download", params={"range": "bytes=a-"})
        assert r.status_code == 400 and "range" in r.json()["message"]
        r = await http.get(f"/v1/knowledge-bases/{kb.id}/chunks", params={"keyword": "cafeteria"})
        [chunk] = r.json()["chunks"]
        r = await http.patch(f"/v1/chunks/{chunk['id']}", json={"text": NEW_TEXT})
        assert r.status_code == 200 and r.json()["chunk"]["edited"] is True, r.text
        r = await http.post(
            "/v1/knowledge-bases:search",
            json={"kb_ids": [kb.id], "query": "observatory telescope", "mode": "SEARCH_MODE_KEYWORD"},
        )
        assert r.json()["hits"][0]["chunk_id"] == chunk["id"]


async def test_the_http_range_header_returns_exactly_the_requested_bytes_with_206_and_416(kapp, stub):
    import httpx

    kb = await create_kb(stub, ADMIN, "range-header")
    data = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
    name = "résumé notes.csv"
    file = await upload(stub, ADMIN, kb.id, name, b"a,b\n" + data.hex().encode() + b",x\n")
    content = b"a,b\n" + data.hex().encode() + b",x\n"
    size = len(content)
    url = f"/v1/files/{file.id}:download"
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{kapp.http_port}", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
    ) as http:
        for spec, want, first, last in [
            ("bytes=0-0", content[:1], 0, 0),
            ("bytes=100-4099", content[100:4100], 100, 4099),
            ("bytes=-7", content[-7:], size - 7, size - 1),
            (f"bytes={size - 3}-", content[-3:], size - 3, size - 1),
            (f"bytes=10-{size + 500}", content[10:], 10, size - 1),
        ]:
            r = await http.get(url, headers={"range": spec})
            assert r.status_code == 206, (spec, r.text)
            assert r.content == want, spec
            assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert r.headers["accept-ranges"] == "bytes"
        # no Range: the whole file, as an attachment named per RFC 6266 (ASCII fallback + exact UTF-8 name)
        r = await http.get(url)
        assert r.status_code == 200 and r.content == content and "content-range" not in r.headers
        assert r.headers["content-disposition"] == (
            "attachment; filename=\"r_sum_ notes.csv\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20notes.csv"
        )
        r = await http.get(url, params={"inline": "true"}, headers={"range": "bytes=0-1"})
        assert r.status_code == 206 and r.headers["content-disposition"].startswith("inline; ")
        # several ranges may be ignored (RFC 9110 14.2): the whole body
        r = await http.get(url, headers={"range": "bytes=0-1,5-6"})
        assert r.status_code == 200 and r.content == content
        # unsatisfiable: 416 with the size in Content-Range
        r = await http.get(url, headers={"range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        assert r.json()["code"] == grpc.StatusCode.OUT_OF_RANGE.value[0]
        # no credentials, no bytes
        r = await http.get(url, headers={"range": "bytes=0-1", "authorization": "Bearer nobody"})
        assert r.status_code == 401


async def reprocess(stub, file_id: str, chunk_size: int) -> pb.KnowledgeFile:
    await stub.ReprocessFile(
        pb.ReprocessFileRequest(file_id=file_id, chunking_rule=pb.ChunkingRule(chunk_size=chunk_size, chunk_overlap=0)),
        metadata=ADMIN,
    )
    return await wait_done(stub, ADMIN, file_id)


async def test_hand_edits_and_added_chunks_survive_reprocessing_with_a_new_rule(stub):
    kb, file = await base_with_file(stub, "survive")
    [heron] = await chunks_of(stub, kb.id, keyword="heron")
    await stub.UpdateChunk(pb.UpdateChunkRequest(chunk=pb.Chunk(id=heron.id, text=NEW_TEXT)), metadata=ADMIN)
    extra = "Parking permits for staff are renewed every January at the porter's lodge."
    await stub.AddChunk(pb.AddChunkRequest(file_id=file.id, chunk=pb.Chunk(text=extra, page=2)), metadata=ADMIN)

    for size in (40, 20):  # two paragraphs a chunk, then back to one: the edits hold both times, never doubled
        done = await reprocess(stub, file.id, size)
        chunks = await chunks_of(stub, kb.id, page_size=100)
        assert done.status == pb.FILE_STATUS_DONE and done.chunk_count == len(chunks)
        [edited] = [c for c in chunks if c.text == NEW_TEXT]
        [added] = [c for c in chunks if c.text == extra]
        assert edited.edited and not edited.added and added.edited and added.added and added.page == 2
        assert not any("heron" in c.text for c in chunks)  # the edit's old text does not come back...
        joined = "\n".join(c.text for c in chunks)
        assert all(p in joined for p in PARAGRAPHS[1:])  # ...and no neighbour's text is lost
        assert sorted(c.index for c in chunks) == list(range(len(chunks)))
        # both are in both indexes again
        assert (await search(stub, ADMIN, [kb.id], "observatory telescope", mode=pb.SEARCH_MODE_KEYWORD))[
            0
        ].chunk_id == edited.id
        assert (await search(stub, ADMIN, [kb.id], NEW_QUERY, mode=pb.SEARCH_MODE_VECTOR))[0].chunk_id == edited.id
        assert (await search(stub, ADMIN, [kb.id], "parking permits lodge", mode=pb.SEARCH_MODE_KEYWORD))[
            0
        ].chunk_id == added.id
        assert await search(stub, ADMIN, [kb.id], "heron quarry", mode=pb.SEARCH_MODE_KEYWORD) == []
    assert len(chunks) == len(PARAGRAPHS) + 1  # one a paragraph (the heron's now the edit) and the added one
