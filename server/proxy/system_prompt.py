"""System prompt rules for `POST /v1/messages` (Anthropic) and `POST /v1/chat/completions` (OpenAI).

Two modes, off by default:
- replace: the first system text becomes the configured text. Only that text changes: a list of blocks keeps its
  other blocks and every other field of the changed block (cache_control, citations, ...); a string stays a string.
  A request without a system prompt is left alone (there is nothing to replace).
- insert: when no system text contains the marker (the configured text itself when no marker is set), a text
  block with the configured text is put first; otherwise the request is left alone. Inserting is idempotent.

A body is rewritten only when the rule changes something; otherwise the client's exact bytes are forwarded. A body
that is not a JSON object, or whose system prompt has an unexpected shape, is never touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ANTHROPIC_PATH = "/v1/messages"
OPENAI_PATH = "/v1/chat/completions"
RULE_PATHS = frozenset({ANTHROPIC_PATH, OPENAI_PATH})
OPENAI_SYSTEM_ROLES = ("system", "developer")
MODES = ("replace", "insert")


@dataclass(frozen=True, slots=True)
class SystemPromptRule:
    enabled: bool = False
    mode: str = "replace"
    text: str = ""
    marker: str = ""

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.text) and self.mode in MODES

    def applies_to(self, method: str, path: str) -> bool:
        return self.active and method == "POST" and path in RULE_PATHS

    def rewrite(self, path: str, body: bytes) -> bytes | None:
        """The rewritten body, or None when the body must be forwarded unchanged."""
        if not self.active or path not in RULE_PATHS:
            return None
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        changed = self._anthropic(data) if path == ANTHROPIC_PATH else self._openai(data)
        if not changed:
            return None
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    # -- Anthropic: body["system"] is a string or a list of content blocks ------------------------------------
    def _anthropic(self, data: dict[str, Any]) -> bool:
        system = data.get("system")
        if self.mode == "replace":
            if isinstance(system, str):
                if system == self.text:
                    return False
                data["system"] = self.text
                return True
            if isinstance(system, list):
                block = _first_text_block(system)
                if block is None or block["text"] == self.text:
                    return False
                block["text"] = self.text
                return True
            return False
        # insert
        marker = self.marker or self.text
        if system is None or system == "" or system == []:
            data["system"] = [{"type": "text", "text": self.text}]
            return True
        if isinstance(system, str):
            if marker in system:
                return False
            data["system"] = [{"type": "text", "text": self.text}, {"type": "text", "text": system}]
            return True
        if isinstance(system, list):
            if any(marker in b["text"] for b in system if _is_text_block(b)):
                return False
            system.insert(0, {"type": "text", "text": self.text})
            return True
        return False

    # -- OpenAI: system (or developer) messages in body["messages"] -------------------------------------------
    def _openai(self, data: dict[str, Any]) -> bool:
        messages = data.get("messages")
        if not isinstance(messages, list):
            return False
        systems = [m for m in messages if isinstance(m, dict) and m.get("role") in OPENAI_SYSTEM_ROLES]
        if self.mode == "replace":
            if not systems:
                return False
            first = systems[0]
            content = first.get("content")
            if isinstance(content, str):
                if content == self.text:
                    return False
                first["content"] = self.text
                return True
            if isinstance(content, list):
                part = _first_text_block(content)
                if part is None or part["text"] == self.text:
                    return False
                part["text"] = self.text
                return True
            return False
        # insert
        marker = self.marker or self.text
        for message in systems:
            content = message.get("content")
            if isinstance(content, str) and marker in content:
                return False
            if isinstance(content, list) and any(marker in p["text"] for p in content if _is_text_block(p)):
                return False
        messages.insert(0, {"role": "system", "content": self.text})
        return True


def _is_text_block(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)


def _first_text_block(blocks: list[Any]) -> dict[str, Any] | None:
    return next((b for b in blocks if _is_text_block(b)), None)
