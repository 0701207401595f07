"""A model session grounded on a knowledge base: a retrieval step, the citations, and the passages in the prompt."""

from __future__ import annotations

import grpc
import pytest

from tests.chat.conftest import register_fake_embedder
from tests.chat.helpers import chat_all, kinds, new_session
from typecase.v1 import chat_pb2, flow_pb2, knowledge_pb2, knowledge_pb2_grpc

FACT = "The Zephyr-9 bridge over the Tagus river opened in 2031 and is painted ochre."


async def test_answers_cite_the_sessions_knowledge_bases(channel, me, upstream):
    kbs = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    embedder = await register_fake_embedder(me.llm, upstream.base_url)  # fast, deterministic vectors
    kb = (
        await kbs.CreateKnowledgeBase(
            knowledge_pb2.CreateKnowledgeBaseRequest(
                knowledge_base=knowledge_pb2.KnowledgeBase(name="bridges", embedding_model_id=embedder.id)
            ),
            metadata=me.md,
        )
    ).knowledge_base
    added = (
        await kbs.AddTextFile(
            knowledge_pb2.AddTextFileRequest(
                kb_id=kb.id, name="bridges.txt", text=FACT + "\n\n" + "Unrelated filler about cooking pasta. " * 20
            ),
            metadata=me.md,
        )
    ).file
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


async def grounded_session(channel, me, upstream, **session_fields):
    kbs = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    embedder = await register_fake_embedder(me.llm, upstream.base_url)
    kb = (
        await kbs.CreateKnowledgeBase(
            knowledge_pb2.CreateKnowledgeBaseRequest(
                knowledge_base=knowledge_pb2.KnowledgeBase(
                    name="bridges",
                    embedding_model_id=embedder.id,
                    chunking_rule=knowledge_pb2.ChunkingRule(chunk_size=40, chunk_overlap=0),
                )
            ),
            metadata=me.md,
        )
    ).knowledge_base
    text = "\n\n".join(
        [
            FACT,
            "Pasta is cooked in salted boiling water for nine minutes.",
            "The Tagus river flows through Lisbon into the Atlantic ocean.",
            "Ochre paint is made from clay coloured by iron oxide.",
        ]
    )
    added = (
        await kbs.AddTextFile(
            knowledge_pb2.AddTextFileRequest(kb_id=kb.id, name="notes.txt", text=text), metadata=me.md
        )
    ).file
    async for update in kbs.WatchFile(knowledge_pb2.WatchFileRequest(file_id=added.id), metadata=me.md):
        status = update.status
    assert status == knowledge_pb2.FILE_STATUS_DONE
    return await new_session(me, kb_ids=[kb.id], **session_fields)


def retrieval_step(events):
    return next(
        e.event.node.node
        for e in events
        if e.event.HasField("node") and e.event.node.node.status != flow_pb2.NODE_RUN_STATUS_RUNNING
    )


async def test_a_follow_up_question_is_rewritten_with_the_conversation_before_searching(channel, me, upstream):
    session = await grounded_session(
        channel, me, upstream, retrieval=chat_pb2.RetrievalSettings(rewrite_query=True, top_k=1)
    )
    assert session.retrieval.rewrite_query and session.retrieval.top_k == 1
    first = await chat_all(me, session.id, "[tokens=3] Tell me about the Zephyr-9 bridge")
    assert retrieval_step(first).inputs["query"] == "[tokens=3] Tell me about the Zephyr-9 bridge"  # nothing to resolve
    upstream.requests.clear()
    events = await chat_all(me, session.id, "[tokens=3 query=When_did_the_Zephyr-9_bridge_open] When did it open?")
    step = retrieval_step(events)
    assert step.inputs["query"] == "When did the Zephyr-9 bridge open"
    [citation] = [c for e in events if e.event.HasField("citation") for c in e.event.citation.citations]
    assert "Zephyr-9" in citation.text  # top_k=1: the one passage the rewritten query finds
    rewrite = upstream.requests[0]["messages"]
    assert "search query" in rewrite[0]["content"] and "Tell me about the Zephyr-9 bridge" in rewrite[1]["content"]

    # off (the default): the question is searched as asked, and no extra model call is made
    await me.chat.UpdateSession(
        chat_pb2.UpdateSessionRequest(
            session=chat_pb2.Session(id=session.id, retrieval=chat_pb2.RetrievalSettings(top_k=2)),
            update_mask={"paths": ["retrieval"]},
        ),
        metadata=me.md,
    )
    upstream.requests.clear()
    events = await chat_all(me, session.id, "[tokens=3 query=ignored] When did it open?")
    assert retrieval_step(events).inputs["query"] == "[tokens=3 query=ignored] When did it open?"
    assert len(upstream.requests) == 1  # the answer only
    assert len([c for e in events if e.event.HasField("citation") for c in e.event.citation.citations]) == 2


async def test_a_sessions_retrieval_settings_are_validated_and_applied(channel, me, upstream):
    for settings, field in (
        (chat_pb2.RetrievalSettings(top_k=101), "session.retrieval.top_k"),
        (chat_pb2.RetrievalSettings(vector_weight=1.5), "session.retrieval.vector_weight"),
        (chat_pb2.RetrievalSettings(score_threshold=-1), "session.retrieval.score_threshold"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await new_session(me, retrieval=settings)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in bad.value.details()
    session = await grounded_session(
        channel,
        me,
        upstream,
        retrieval=chat_pb2.RetrievalSettings(mode=knowledge_pb2.SEARCH_MODE_KEYWORD, score_threshold=0.2, top_k=4),
    )
    got = (await me.chat.GetSession(chat_pb2.GetSessionRequest(session_id=session.id), metadata=me.md)).session
    assert got.retrieval.mode == knowledge_pb2.SEARCH_MODE_KEYWORD and got.retrieval.top_k == 4
    # keyword mode with a threshold: only the passage sharing most of the question's words ("ochre" alone, in the
    # last chunk, scores below it)
    events = await chat_all(me, session.id, "ochre Zephyr-9 bridge Tagus")
    citations = [c for e in events if e.event.HasField("citation") for c in e.event.citation.citations]
    assert len(citations) == 1 and citations[0].text.startswith(FACT) and citations[0].score >= 0.2
