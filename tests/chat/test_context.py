"""The prompt budget: estimates, the answer's reserve, and which history turns are kept."""

from __future__ import annotations

import grpc
import pytest

from typecase.server.chat.context import HistoryTurn, Limits, build_prompt, estimate_tokens, output_reserve
from typecase.server.rpc.errors import TypecaseError


def test_estimates_count_non_ascii_characters_as_tokens():
    assert estimate_tokens("", 3) == 0
    assert estimate_tokens("abcdef", 3) == 2
    assert estimate_tokens("中文字", 3) == 3
    assert estimate_tokens("ab中", 3) == 2


def test_the_reserve_for_the_answer_never_takes_more_than_half_the_window():
    assert output_reserve(100, 4096, 512, 8192) == 100
    assert output_reserve(None, 4096, 512, 8192) == 4096
    assert output_reserve(None, 0, 512, 8192) == 512
    assert output_reserve(None, 32_000, 512, 8192) == 4096


def test_newest_turns_are_kept_system_prompt_and_question_always():
    history = [HistoryTurn(f"q{i} " + "x" * 27, f"a{i} " + "y" * 27) for i in range(10)]  # 10+4 tokens each
    limits = Limits(
        context_tokens=200, reserve_output_tokens=50, default_context_tokens=4096, max_turns=20, chars_per_token=3
    )
    prompt = build_prompt("sys", history, "now?", limits, older_turns=5)
    contents = [m.content for m in prompt.messages]
    assert contents[0] == "sys" and contents[-1] == "now?"
    kept = (len(contents) - 2) // 2
    assert contents[1].startswith(f"q{10 - kept} ") and contents[-2].startswith("a9 ")
    assert prompt.budget.budget_tokens == 150 and prompt.budget.used_tokens <= 150
    assert prompt.budget.dropped_turns == 5 + 10 - kept
    assert build_prompt("", history, "now?", Limits(200, 50, 4096, 3, 3)).budget.dropped_turns == 7
    with pytest.raises(TypecaseError) as failure:
        build_prompt("s" * 600, [], "q", limits)
    assert failure.value.reason == "CONTEXT_TOO_LONG" and failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
