"""A model session grounded on a knowledge base: a retrieval step, the citations, and the passages in the prompt."""

from __future__ import annotations

from tests.chat.conftest import register_fake_embedder
from tests.chat.helpers import chat_all, kinds, new_session
from typecase.v1 import flow_pb2, knowledge_pb2, knowledge_pb2_grpc

FACT = "The Zephyr-9 bridge over the Tagus river opened in 2031 and is painted ochre."


async def test_answers_cite_the_sessions_knowledge_bases(channel, me, upstream):
    kbs = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    embedder = await register_fake_embedder(me.llm, upstream.base_url)  # fast, deterministic vectors
    kb = (await kbs.CreateKnowledgeBase(knowledge_pb2.CreateKnowledgeBaseRequest(
        knowledge_base=knowledge_pb2.KnowledgeBase(name="bridges", embedding_model_id=embedder.id)),
        metadata=me.md)).knowledge_base
    added = (await kbs.AddTextFile(knowledge_pb2.AddTextFileRequest(
        kb_id=kb.id, name="bridges.txt", text=FACT + "\n\n" + "Unrelated filler about cooking pasta. " * 20),
        metadata=me.md)).file
    async for update in kbs.WatchFile(knowledge_pb2.WatchFileRequest(file_id=added.id), metadata=me.md):
        status = update.status
    assert status == knowledge_pb2.FILE_STATUS_DONE

    session = await new_session(me, kb_ids=[kb.id])
    events = await chat_all(me, session.id, "[tokens=5] When did the Zephyr-9 bridge open?")
    assert kinds(events)[:4] == ["started", "node", "citation", "node"] and kinds(events)[-1] == "ended"
    retrieval = events[3].event.node.node
    assert retrieval.node_type == flow_pb2.NODE_TYPE_KNOWLEDGE_RETRIEVAL
    assert retrieval.status == flow_pb2.NODE_RUN_STATUS_SUCCEEDED
    citations = events[2].event.citation.citations
    assert citations and citations[0].kb_id == kb.id and "Zephyr-9" in citations[0].text
    answer = events[-1].event.ended.answer
    assert list(answer.citations) == list(citations) and answer.steps[0].node == retrieval

    sent = next(r["messages"] for r in upstream.requests if "Zephyr-9 bridge open" in r["messages"][-1]["content"])
    grounding = [m["content"] for m in sent if m["role"] == "system" and "[1]" in m["content"]]
    assert grounding and FACT in grounding[0]
