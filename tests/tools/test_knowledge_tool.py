"""knowledge_search searches the caller's knowledge bases with the caller's rights (a real base, the built-in
embedding model)."""

from __future__ import annotations

import grpc
import pytest

from tests.knowledge.support import create_kb, upload, wait_done
from tests.tools.support import call, new_user, reason
from typecase.v1 import knowledge_pb2 as kpb
from typecase.v1 import knowledge_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_knowledge_search_finds_the_callers_passages_and_not_another_users(tchannel):
    owner, other = await new_user(tchannel, "kbowner"), await new_user(tchannel, "kbother")
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(tchannel)
    kb = await create_kb(stub, owner.md, "handbook")
    text = b"The office cat is called Mochi and she sleeps on the radiator.\n\nParking is behind the bakery."
    file = await upload(stub, owner.md, kb.id, "handbook.txt", text)
    assert (await wait_done(stub, owner.md, file.id, timeout=240)).status == kpb.FILE_STATUS_DONE
    reply = await call(
        owner,
        "builtin-knowledge_search",
        {"query": "what is the cat called", "knowledge_base_ids": [kb.id]},
        timeout_ms=120_000,
    )
    assert "Mochi" in reply.text
    hits = reply.structured.struct_value.fields["results"].list_value.values
    assert hits and hits[0].struct_value.fields["knowledge_base_id"].string_value == kb.id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(
            other, "builtin-knowledge_search", {"query": "cat", "knowledge_base_ids": [kb.id]}, timeout_ms=120_000
        )
    assert reason(caught.value) == "TOOL_FAILED" and "Mochi" not in caught.value.details()
