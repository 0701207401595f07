"""The query side of a grounded chat turn: the session's retrieval settings and history-aware query rewriting.

A session may say how its passages are found (RetrievalSettings: top_k, score threshold, mode, vector weight);
unset fields take the server's defaults. With `rewrite_query`, the question is first rewritten by the session's
chat model into a standalone search query using the conversation so far: "and how much does it cost?" after a
question about the Model X becomes "Model X price", which a search can match. Rewriting is off by default (it
costs one model call per turn); it is skipped on a session's first question (nothing to resolve), and any failure
or empty answer falls back to the question as asked: grounding never blocks a turn.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf import json_format

from typecase.server.rpc.errors import invalid_argument
from typecase.v1 import chat_pb2, common_pb2, knowledge_pb2, llm_pb2

log = logging.getLogger("typecase.chat")

MAX_TOP_K = 100
INSTRUCTIONS = (
    "You turn the user's latest question into a standalone search query for a document search. Use the "
    "conversation to resolve what the question refers to (pronouns, 'it', 'that one', omitted subjects). Reply "
    "with the query only, in the question's language, without quotes or explanations."
)
_EXCERPT_CHARS = 600


def check_settings(message: chat_pb2.RetrievalSettings, field: str = "session.retrieval") -> dict[str, Any] | None:
    """The settings as stored (proto JSON), or None when all are defaults; INVALID_ARGUMENT naming the field."""
    if not 0 <= message.top_k <= MAX_TOP_K:
        raise invalid_argument(f"{field}.top_k", f"must be between 0 (the default) and {MAX_TOP_K}")
    if message.score_threshold < 0:
        raise invalid_argument(f"{field}.score_threshold", "must not be negative")
    if message.HasField("vector_weight") and not 0 <= message.vector_weight <= 1:
        raise invalid_argument(f"{field}.vector_weight", "must be between 0 and 1")
    if message.mode not in knowledge_pb2.SearchMode.values():
        raise invalid_argument(f"{field}.mode", "unknown search mode")
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return data or None


def settings_message(data: dict[str, Any] | None) -> chat_pb2.RetrievalSettings | None:
    if not data:
        return None
    return json_format.ParseDict(data, chat_pb2.RetrievalSettings(), ignore_unknown_fields=True)


def _conversation(messages) -> list[tuple[str, str]]:
    """(role, text) of the prompt's earlier user and assistant messages (the last message is the question)."""
    roles = {common_pb2.MESSAGE_ROLE_USER: "User", common_pb2.MESSAGE_ROLE_ASSISTANT: "Assistant"}
    out = []
    for m in list(messages)[:-1]:
        if m.role in roles and m.content:
            out.append((roles[m.role], m.content[-_EXCERPT_CHARS:]))
    return out


def clean_query(raw: str, max_chars: int) -> str:
    line = next((line.strip() for line in raw.strip().splitlines() if line.strip()), "")
    for prefix in ("query:", "search query:", "standalone query:", "查询:", "查询："):
        if line.lower().startswith(prefix):
            line = line[len(prefix) :].strip()
    return line.strip("\"'“”‘’`").strip()[:max_chars]


async def rewrite_query(llm, model_id: str, messages, question: str, max_tokens: int, turns: int = 6) -> str:
    """The question rewritten with the conversation (the last `turns` exchanges); the question itself when there
    is no conversation yet or the model gives nothing usable."""
    history = _conversation(messages)[-2 * turns :]
    if not history or llm is None or not model_id:
        return question
    transcript = "\n".join(f"{role}: {text}" for role, text in history)
    request = llm_pb2.GenerateRequest(
        model_id=model_id,
        messages=[
            llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=INSTRUCTIONS),
            llm_pb2.ChatMessage(
                role=common_pb2.MESSAGE_ROLE_USER,
                content=f"Conversation:\n{transcript}\n\nLatest question: {question}\n\nStandalone search query:",
            ),
        ],
        config=llm_pb2.GenerationConfig(temperature=0.0, max_tokens=max_tokens),
    )
    try:
        parts = [chunk.text async for chunk in llm.generate(request)]
    except Exception as exc:  # grounding on the question as asked beats no answer
        log.warning("query rewriting with %s failed: %s", model_id, exc)
        return question
    return clean_query("".join(parts), max(len(question) * 4, 200)) or question


async def search_request(
    llm,
    *,
    model_id: str,
    messages,
    question: str,
    kb_ids: list[str],
    retrieval: dict[str, Any] | None,
    default_top_k: int,
    rewrite_max_tokens: int,
) -> knowledge_pb2.SearchRequest:
    """The knowledge search for a turn's question under the session's retrieval settings."""
    settings = settings_message(retrieval) or chat_pb2.RetrievalSettings()
    query = question
    if settings.rewrite_query:
        query = await rewrite_query(llm, model_id, messages, question, rewrite_max_tokens)
    request = knowledge_pb2.SearchRequest(
        kb_ids=kb_ids,
        query=query,
        top_k=settings.top_k or default_top_k,
        score_threshold=settings.score_threshold,
        mode=settings.mode,
    )
    if settings.HasField("vector_weight"):
        request.vector_weight = settings.vector_weight
    return request
