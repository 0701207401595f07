"""The retrieval step of a chat turn: search the session's knowledge bases for the question, emit the step and
the citations, and put the passages in the prompt as far as the context budget allows.

A step of its own (the turn only calls it) so that the generation in turns.py stays short and the step can be
tested and changed on its own.
"""

from __future__ import annotations

from collections.abc import Callable

from typecase.server.chat import context as ctx
from typecase.server.chat import search_query
from typecase.server.chat.turn_state import Turn, now_stamp
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.ports import KnowledgeSearch
from typecase.v1 import chat_pb2, common_pb2, flow_pb2, llm_pb2

Emit = Callable[..., None]  # Turns._emit(turn, event, terminal=False)


async def retrieve(turn: Turn, knowledge: KnowledgeSearch | None, llm, emit: Emit, settings) -> bool:
    """Ground the answer on the session's knowledge bases (when the knowledge service runs here): a
    retrieval step, the citations, and the passages in the prompt as far as the budget allows. True when the
    prompt changed."""
    if not turn.kb_ids or knowledge is None:
        return False
    node = flow_pb2.NodeRun(
        node_id="knowledge_retrieval",
        node_type=flow_pb2.NODE_TYPE_KNOWLEDGE_RETRIEVAL,
        node_name="Knowledge retrieval",
        status=flow_pb2.NODE_RUN_STATUS_RUNNING,
        start_time=now_stamp(),
        attempt=1,
    )
    emit(turn, chat_pb2.TurnEvent(node=chat_pb2.NodeEvent(node=node)))
    try:
        request = await search_query.search_request(
            llm,
            model_id=turn.model_id,
            messages=turn.request.messages,
            question=turn.question,
            kb_ids=turn.kb_ids,
            retrieval=turn.retrieval,
            default_top_k=settings.chat_kb_top_k,
            rewrite_max_tokens=settings.chat_query_rewrite_max_tokens,
        )
        node.inputs.update({"query": request.query})
        found = await knowledge.search(request)
    except TypecaseError as exc:  # answer without grounding rather than not at all
        node.status, node.error = flow_pb2.NODE_RUN_STATUS_FAILED, exc.to_status()
    else:
        node.status = flow_pb2.NODE_RUN_STATUS_SUCCEEDED
        turn.citations = [
            common_pb2.Citation(
                kb_id=h.kb_id,
                file_id=h.file_id,
                file_name=h.file_name,
                chunk_id=h.chunk_id,
                page=h.page,
                text=h.text,
                score=h.score,
            )
            for h in found.hits
        ]
        if turn.citations:
            emit(turn, chat_pb2.TurnEvent(citation=chat_pb2.CitationEvent(citations=turn.citations)))
        room = turn.budget.budget_tokens - turn.budget.used_tokens - ctx.MESSAGE_OVERHEAD_TOKENS
        passages = []
        for i, citation in enumerate(turn.citations, 1):
            text = f"[{i}] {citation.file_name}: {citation.text}"
            cost = ctx.estimate_tokens(text, settings.chat_chars_per_token) + 1
            if cost > room:
                break
            passages.append(text)
            room -= cost
        if passages:
            content = "Answer using these passages where relevant, citing them as [n]:\n\n" + "\n\n".join(passages)
            turn.request.messages.insert(
                len(turn.request.messages) - 1,
                llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=content),
            )
            turn.budget.used_tokens += ctx.estimate_tokens(content, settings.chat_chars_per_token)
    node.end_time.GetCurrentTime()
    turn.steps.append(chat_pb2.NodeEvent(node=node))
    emit(turn, chat_pb2.TurnEvent(node=chat_pb2.NodeEvent(node=node)))
    return node.status == flow_pb2.NODE_RUN_STATUS_SUCCEEDED and bool(turn.citations)
