"""The prompt of a chat turn: system prompt, as much recent history as fits the model's context window, and the
question. Oldest turns are dropped first; the system prompt and the question are always kept (when even they do
not fit, the turn fails with CONTEXT_TOO_LONG before it starts).

Token counts are estimated without the model's tokenizer, deliberately on the high side: ASCII text at
`chars_per_token` characters per token, any other character (CJK, emoji, accents) one token each, plus a fixed
overhead per message for the chat template's role markers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import grpc

from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import chat_pb2, common_pb2, llm_pb2

MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str, chars_per_token: float) -> int:
    if not text:
        return 0
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    other = len(text) - ascii_chars
    return math.ceil(ascii_chars / chars_per_token) + other


@dataclass
class HistoryTurn:
    question: str
    answer: str


@dataclass
class Prompt:
    messages: list[llm_pb2.ChatMessage] = field(default_factory=list)
    budget: chat_pb2.ContextBudget = field(default_factory=chat_pb2.ContextBudget)


@dataclass(frozen=True)
class Limits:
    context_tokens: int  # the model's context window (0: unknown, use default_context_tokens)
    reserve_output_tokens: int  # room kept for the answer
    default_context_tokens: int
    max_turns: int  # history turns considered at most, however small
    chars_per_token: float


def output_reserve(requested_max_tokens: int | None, model_max_output: int, default_reserve: int, window: int) -> int:
    """Tokens kept free for the answer: the turn's max_tokens, else the model's output limit, else the default,
    never more than half the window (a model that may write 32k tokens must still see some history)."""
    reserve = requested_max_tokens or model_max_output or default_reserve
    return max(1, min(reserve, window // 2))


def build_prompt(
    system_prompt: str, history: list[HistoryTurn], question: str, limits: Limits, older_turns: int = 0
) -> Prompt:
    """`history` oldest first; `older_turns` counts earlier turns the caller did not even load (beyond max_turns).
    Returns the messages to send and the budget report for the turn's end event."""
    window = limits.context_tokens or limits.default_context_tokens
    budget = window - limits.reserve_output_tokens
    cpt = limits.chars_per_token

    def cost(text: str) -> int:
        return estimate_tokens(text, cpt) + MESSAGE_OVERHEAD_TOKENS

    fixed = cost(question) + (cost(system_prompt) if system_prompt else 0)
    if fixed > budget:
        raise TypecaseError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONTEXT_TOO_LONG",
            f"the question{' and system prompt' if system_prompt else ''} need about {fixed} tokens, more than the "
            f"{budget} this model can take (context {window} minus {limits.reserve_output_tokens} kept for the answer)",
            {"budget_tokens": str(budget), "needed_tokens": str(fixed)},
        )
    used = fixed
    kept: list[HistoryTurn] = []
    for turn in reversed(history[-limits.max_turns :] if limits.max_turns else []):
        turn_cost = cost(turn.question) + cost(turn.answer)
        if used + turn_cost > budget:
            break
        kept.append(turn)
        used += turn_cost
    kept.reverse()

    messages = []
    if system_prompt:
        messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=system_prompt))
    for turn in kept:
        messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=turn.question))
        messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_ASSISTANT, content=turn.answer))
    messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=question))
    return Prompt(
        messages,
        chat_pb2.ContextBudget(
            budget_tokens=budget, used_tokens=used, dropped_turns=older_turns + len(history) - len(kept)
        ),
    )
