"""Session titles from the first exchange: written by the title model when one is configured
(LLMDefaults.title_model_id), else the start of the first question."""

from __future__ import annotations

import asyncio
import logging
import re

from sqlalchemy import update

from typecase.server.chat.models import ChatSessionRow
from typecase.v1 import common_pb2, llm_pb2

log = logging.getLogger("typecase.chat")

INSTRUCTIONS = (
    "You write titles for chat conversations. Reply with a title of at most six words that says what the user "
    "asks about, in the user's language. No quotes, no trailing punctuation, nothing else."
)
_EXCERPT_CHARS = 1000


def fallback_title(question: str, max_chars: int) -> str:
    """The first line of the question, cut at a word boundary near max_chars."""
    text = " ".join(question.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip(" ,.;:") + "…"


def clean_title(raw: str, max_chars: int) -> str:
    line = next((line for line in raw.strip().splitlines() if line.strip()), "")
    line = re.sub(r"^(title|标题)\s*[:：]\s*", "", line.strip(), flags=re.IGNORECASE)
    line = line.strip().strip("\"'“”‘’`*#").strip().rstrip("。.!！?？")
    return line[:max_chars].strip()


async def generate_title(llm, model_id: str, question: str, answer: str, max_chars: int, max_tokens: int) -> str:
    """The title model's title for the exchange; "" when it produced nothing usable (callers fall back)."""
    request = llm_pb2.GenerateRequest(
        model_id=model_id,
        messages=[
            llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=INSTRUCTIONS),
            llm_pb2.ChatMessage(
                role=common_pb2.MESSAGE_ROLE_USER,
                content=f"User: {question[:_EXCERPT_CHARS]}\n\nAssistant: {answer[:_EXCERPT_CHARS]}\n\nTitle:",
            ),
        ],
        config=llm_pb2.GenerationConfig(temperature=0.2, max_tokens=max_tokens),
    )
    parts = []
    async for chunk in llm.generate(request):
        parts.append(chunk.text)
    return clean_title("".join(parts), max_chars)


async def write_title(writing, llm, settings, session_id: str, question: str, answer: str, model_id: str) -> None:
    """Title a session from its first exchange with the title model (else the question's start), unless the user
    set a title meanwhile. `writing` opens a unit of work that writes (Turns.writing)."""
    limit = settings.chat_title_max_chars
    title = ""
    try:
        async with asyncio.timeout(settings.chat_title_timeout_seconds):
            title = await generate_title(llm, model_id, question, answer, limit, settings.chat_title_max_tokens)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("chat: title model failed for session %s (%s); using the question", session_id, exc)
    title = title or fallback_title(question, limit)
    async with writing() as session:
        await session.execute(  # a title the user set meanwhile wins
            update(ChatSessionRow)
            .where(ChatSessionRow.id == session_id, ChatSessionRow.title == "")
            .values(title=title)
        )
