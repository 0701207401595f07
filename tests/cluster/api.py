"""The HTTP calls the cluster tests make, as a browser or an HTTP client behind a load balancer would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.chat.fake_upstream import EMBED_DIMS
from tests.cluster.rig import AUTH


def call(base: str, method: str, path: str, body: Any = None, expect: int = 200, **params: Any) -> dict:
    response = httpx.request(method, base + path, json=body, params=params or None, headers=AUTH, timeout=30)
    assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def register_model(
    base: str,
    upstream_url: str,
    name: str,
    *,
    model_type: str = "MODEL_TYPE_LLM",
    limits: dict | None = None,
    fallbacks: list[str] | None = None,
    **model: Any,
) -> dict:
    provider = call(
        base,
        "POST",
        "/v1/providers",
        {
            "name": f"p-{name}",
            "type": "PROVIDER_TYPE_OPENAI_COMPATIBLE",
            "base_url": upstream_url,
            "enabled": True,
            "max_retries": 0,
        },
    )
    return call(
        base,
        "POST",
        "/v1/models",
        {
            "provider_id": provider["provider"]["id"],
            "name": name,
            "upstream_name": "fake",
            "type": model_type,
            "context_length": 8192,
            "online": True,
            "limits": limits or {},
            "fallback_model_ids": fallbacks or [],
            **({"embedding_dimensions": EMBED_DIMS} if model_type == "MODEL_TYPE_EMBEDDING" else {}),
            **model,
        },
    )["model"]


def set_defaults(base: str, **defaults: str) -> None:
    call(base, "PATCH", "/v1/llm/defaults", defaults, update_mask=",".join(defaults))


@dataclass
class Event:
    id: str | None
    kind: str  # "message" or "error"
    data: dict

    @property
    def seq(self) -> int:
        return int(self.data["seq"])

    @property
    def what(self) -> str:
        """The turn event's oneof case: started, token, ended, error..."""
        return next(iter(k for k in self.data.get("event", {}) if k != "time"), "")


def sse(
    base: str, method: str, path: str, body: Any = None, last_event_id: int | None = None, timeout: float = 60
) -> Iterator[Event]:
    """Read an SSE stream; an `event: error` frame is yielded, not raised."""
    headers = {**AUTH, "accept": "text/event-stream"}
    if last_event_id is not None:
        headers["last-event-id"] = str(last_event_id)
    with httpx.stream(method, base + path, json=body, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, f"{path}: {response.status_code} {response.read().decode()}"
        event_id, kind, data = None, "message", []
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if data:
                    yield Event(event_id, kind, json.loads("\n".join(data)))
                event_id, kind, data = None, "message", []
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                event_id = value
            elif field == "event":
                kind = value
            elif field == "data":
                data.append(value)


def text_of(events: list[Event]) -> str:
    return "".join(e.data["event"]["token"]["text"] for e in events if e.what == "token")


def answer_message(base: str, session_id: str) -> dict:
    messages = call(base, "GET", f"/v1/sessions/{session_id}/messages")["messages"]
    return next(m for m in reversed(messages) if m["category"] == "MESSAGE_CATEGORY_ANSWER")
