"""The issue's end-to-end flow on the built-in local model: start -> knowledge retrieval -> llm -> condition ->
output -> end, grounded on a knowledge base holding a planted fact, and its answer cites the planted chunk."""

from __future__ import annotations

import asyncio

import pytest

from tests.flow.support import create_flow, edge, graph, kinds, new_user, node, outputs, run_flow, to_dict
from typecase.v1 import flow_pb2, knowledge_pb2, knowledge_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="package")

FACT = "The lighthouse keeper of Quillon Bay is a heron named Ottoline Pembrake."
FILLER = (
    "Tide tables for the northern coast are published every spring by the harbour office. "
    "Fishing boats leave before dawn and return in the afternoon. "
)


async def wait_indexed(stub, md, file_id: str, timeout: float = 90) -> None:
    async def done():
        async for event in stub.WatchFile(knowledge_pb2.WatchFileRequest(file_id=file_id), metadata=md):
            if event.status in (knowledge_pb2.FILE_STATUS_DONE, knowledge_pb2.FILE_STATUS_FAILED):
                return event.status
        return (await stub.GetFile(knowledge_pb2.GetFileRequest(file_id=file_id), metadata=md)).file.status

    assert await asyncio.wait_for(done(), timeout) == knowledge_pb2.FILE_STATUS_DONE


def rag_graph(kb_id: str) -> flow_pb2.Graph:
    return graph(
        [
            node("start", "start", variables=[{"name": "question", "type": "text", "required": True}]),
            node("kr", "knowledge_retrieval", kb_ids=[kb_id], query="{{question}}", top_k=2, mode="keyword"),
            node(
                "llm",
                "llm",
                system_prompt="Answer from these passages:\n{{kr.context}}",
                user_prompt="{{question}}",
                max_tokens=12,
                temperature=0,
            ),
            node("check", "condition", cases=[{"handle": "found", "expression": "kr.count > 0 and len(llm.text) > 0"}]),
            node(
                "answer",
                "output",
                stream_from="llm",
                template="{{llm.text}}\n\nSources:{% for c in kr.citations %}\n[{{loop.index}}] {{c.file_name}}: "
                "{{c.text}}{% endfor %}",
                citations="{{kr.citations}}",
            ),
            node("unknown", "output", template="I could not find that in the knowledge base."),
            node(
                "end",
                "end",
                outputs={"answer": "{{answer.text}}", "citations": "{{kr.citations}}", "fallback": "{{unknown.text}}"},
            ),
        ],
        [
            edge("start", "kr"),
            edge("kr", "llm"),
            edge("llm", "check"),
            edge("check", "answer", "found"),
            edge("check", "unknown", "else"),
            edge("answer", "end"),
            edge("unknown", "end"),
        ],
    )


async def test_rag_flow_on_the_local_model_cites_the_planted_chunk(fchannel):
    alice = await new_user(fchannel, "rag-alice")
    kb_stub = knowledge_pb2_grpc.KnowledgeServiceStub(fchannel)
    kb = (
        await kb_stub.CreateKnowledgeBase(
            knowledge_pb2.CreateKnowledgeBaseRequest(knowledge_base=knowledge_pb2.KnowledgeBase(name="coast")),
            metadata=alice.md,
        )
    ).knowledge_base
    filler = (
        await kb_stub.AddTextFile(
            knowledge_pb2.AddTextFileRequest(kb_id=kb.id, name="tides.txt", text=FILLER * 3), metadata=alice.md
        )
    ).file
    planted = (
        await kb_stub.AddTextFile(
            knowledge_pb2.AddTextFileRequest(kb_id=kb.id, name="keeper.txt", text=FACT), metadata=alice.md
        )
    ).file
    await wait_indexed(kb_stub, alice.md, filler.id)
    await wait_indexed(kb_stub, alice.md, planted.id)

    flow = await create_flow(alice, "lighthouse", rag_graph(kb.id))
    events = await run_flow(alice, flow.id, {"question": "Who is the lighthouse keeper of Quillon Bay?"}, timeout=120)
    assert kinds(events)[0] == "run_started" and kinds(events)[-1] == "run_finished"
    ran = [
        e.event.node_finished.node_id
        for e in events
        if e.event.HasField("node_finished") and e.event.node_finished.status == flow_pb2.NODE_RUN_STATUS_SUCCEEDED
    ]
    assert ran == ["start", "kr", "llm", "check", "answer", "end"]
    skipped = [
        e.event.node_finished.node_id
        for e in events
        if e.event.HasField("node_finished") and e.event.node_finished.status == flow_pb2.NODE_RUN_STATUS_SKIPPED
    ]
    assert skipped == ["unknown"]

    # The LLM streamed its answer token by token, then the output added the sources.
    llm_tokens = [e.event.token.text for e in events if e.event.HasField("token") and e.event.token.node_id == "llm"]
    out_tokens = [e.event.token.text for e in events if e.event.HasField("token") and e.event.token.node_id == "answer"]
    assert len(llm_tokens) >= 2 and "".join(llm_tokens).strip()
    assert len(out_tokens) == 1 and "keeper.txt" in out_tokens[0] and FACT in out_tokens[0]

    result = outputs(events)
    assert result["answer"].startswith("".join(llm_tokens))
    assert "[1] keeper.txt: " + FACT in result["answer"]
    assert result["citations"][0]["file_id"] == planted.id and result["citations"][0]["text"] == FACT
    assert result["fallback"] is None  # a skipped node has no outputs

    llm_done = next(
        e.event.node_finished
        for e in events
        if e.event.HasField("node_finished") and e.event.node_finished.node_id == "llm"
    )
    assert 0 < llm_done.usage.completion_tokens <= 12 and llm_done.usage.prompt_tokens > 0
    assert llm_done.elapsed.ToNanoseconds() > 0
    assert FACT in to_dict(llm_done.inputs)["system_prompt"]

    run = (await alice.flow.GetRun(flow_pb2.GetRunRequest(run_id=events[0].run_id), metadata=alice.md)).run
    assert run.status == flow_pb2.RUN_STATUS_FINISHED
    assert [n.node_id for n in run.nodes][:6] == ["start", "kr", "llm", "check", "answer", "end"]
    assert run.usage.completion_tokens == llm_done.usage.completion_tokens
    assert run.last_seq == events[-1].seq


async def test_a_published_flow_answers_other_users_from_its_owners_knowledge(fchannel):
    """Bob runs Alice's published flow, which she made run as its owner: the retrieval uses Alice's base (Bob
    cannot see it himself)."""
    owner = await new_user(fchannel, "rag-owner")
    bob = await new_user(fchannel, "rag-bob")
    kb_stub = knowledge_pb2_grpc.KnowledgeServiceStub(fchannel)
    kb = (
        await kb_stub.CreateKnowledgeBase(
            knowledge_pb2.CreateKnowledgeBaseRequest(knowledge_base=knowledge_pb2.KnowledgeBase(name="private")),
            metadata=owner.md,
        )
    ).knowledge_base
    planted = (
        await kb_stub.AddTextFile(
            knowledge_pb2.AddTextFileRequest(kb_id=kb.id, name="keeper.txt", text=FACT), metadata=owner.md
        )
    ).file
    await wait_indexed(kb_stub, owner.md, planted.id)
    g = graph(
        [
            node("start", "start", variables=[{"name": "q"}]),
            node("kr", "knowledge_retrieval", kb_ids=[kb.id], query="{{q}}", mode="keyword"),
            node("end", "end", outputs={"n": "{{kr.count}}", "first": "{{kr.chunks[0].text}}"}),
        ],
        [edge("start", "kr"), edge("kr", "end")],
    )
    flow = await create_flow(owner, "shared rag", g, run_as=flow_pb2.FLOW_RUN_AS_OWNER)
    await owner.flow.PublishFlow(flow_pb2.PublishFlowRequest(flow_id=flow.id), metadata=owner.md)
    events = await run_flow(bob, flow.id, {"q": "heron lighthouse keeper"})
    assert outputs(events) == {"n": 1.0, "first": FACT}
