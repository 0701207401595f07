"""API-key scopes: what a key may open. An API key carries a set of scopes; every surface asks for one.

- "api": the Typecase API (gRPC, REST/SSE/WebSocket, the OpenAI-compatible routes). Keys created without scopes
  get this one, and so did every key made before scopes existed.
- "proxy": the LLM API proxy listener (its access key). A key with only this scope opens nothing else, and a key
  without it does not open the proxy, so a key handed to a tool that only needs the proxy cannot read chats.

Stored as one space-separated column (OAuth's `scope` form); the set is small and fixed.
"""

from __future__ import annotations

from collections.abc import Iterable

from typecase.server.rpc.errors import invalid_argument

SCOPE_API = "api"
SCOPE_PROXY = "proxy"
SCOPES = (SCOPE_API, SCOPE_PROXY)
DEFAULT_SCOPES = (SCOPE_API,)


def clean_scopes(values: Iterable[str], field: str = "api_key.scopes") -> list[str]:
    """The requested scopes, validated and in canonical order; the default when none are given."""
    requested = set()
    for value in values:
        scope = value.strip().lower()
        if scope not in SCOPES:
            raise invalid_argument(field, f"unknown scope {value!r}; use {' or '.join(repr(s) for s in SCOPES)}")
        requested.add(scope)
    return [s for s in SCOPES if s in requested] or list(DEFAULT_SCOPES)


def encode(scopes: Iterable[str]) -> str:
    return " ".join(scopes)


def decode(text: str | None) -> frozenset[str]:
    return frozenset((text or SCOPE_API).split())
