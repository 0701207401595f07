"""The fake OpenAI upstream, scriptable: each entry of `script` is what the next request offering tools answers -
a list of calls ({"name", "arguments"}, run in parallel when several), or "answer" for a final text quoting every
tool result since the model's last message. With the script empty it behaves as FakeUpstream does."""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

from tests.llm.fake_upstream import FakeUpstream


class ScriptedUpstream(FakeUpstream):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.script: deque[list[dict[str, Any]] | str] = deque()
        self._script_lock = threading.Lock()
        self._answering: dict[int, bool] = {}

    def program(self, *entries: list[dict[str, Any]] | str) -> None:
        with self._script_lock:
            self.script.clear()
            self.script.extend(entries)

    def _openai_calls(self, body: dict[str, Any]) -> list[dict[str, str]]:
        if not body.get("tools"):
            return []
        with self._script_lock:
            entry = self.script.popleft() if self.script else None
        if entry is None:
            return super()._openai_calls(body)
        if entry == "answer":
            return []
        n = sum(1 for m in body.get("messages") or () if m.get("role") == "assistant")
        return [
            {"id": f"call_s{n}_{i}", "name": c["name"], "arguments": json.dumps(c.get("arguments") or {})}
            for i, c in enumerate(entry)
        ]

    @staticmethod
    def _openai_tool_result(body: dict[str, Any]) -> str | None:
        results = []
        for message in reversed(body.get("messages") or []):
            if message.get("role") != "tool":
                break
            results.append(str(message.get("content")))
        return " | ".join(reversed(results)) if results else None
