"""The prompt's token estimate (rate limits per minute of tokens and usage without an upstream count use it)."""

from __future__ import annotations

from typecase.server.llm.prompt import FileRef, Prompt
from typecase.server.llm.providers import Image, Message, ToolCall, ToolSpec


def test_estimate_counts_text_tool_calls_images_and_tools():
    prompt = Prompt(
        [
            Message("system", "x" * 40),  # 10 + 4
            Message("user", "", parts=["abcd" * 5, Image(url="https://e.x/a.png"), FileRef("file-1"), "efgh"]),
            Message("assistant", "", tool_calls=[ToolCall("c1", "f", "y" * 8), ToolCall("c2", "g", "")]),
        ],
        tools=[ToolSpec("f", "z" * 12, {}, schema_chars=40)],
    )
    # text 24 chars -> 6 + 4, two images (an Image, a file id) 2 * 85; calls (2 + 4) + (0 + 4) + 0 + 4; tool 3 + 10
    assert prompt.estimate_tokens() == 14 + (6 + 4 + 170) + (6 + 4 + 4) + 13
    assert Prompt([Message("user", "")]).estimate_tokens() == 4
