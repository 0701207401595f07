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


# -- restricted keys ("publish as API") -----------------------------------------------------------------------------
# A key may be limited to named resources and to actions; each action opens a fixed set of RPCs, so the check is a
# set lookup on the method name in the guard (every surface passes it), and the resource check is the domains'
# (`principal.check_key_resource` where they load a flow, a knowledge base, an assistant).
RESOURCE_TYPES = ("flow", "knowledge_base", "assistant")
ACTION_METHODS = {
    "run": frozenset(
        f"/typecase.v1.FlowService/{m}" for m in ("RunFlow", "GetRun", "StreamRunEvents", "ResumeRun", "StopRun")
    ),
    "search": frozenset({"/typecase.v1.KnowledgeService/Search"}),
    # /openai/v1 chat completions: only with an assistant the key names as its model (compat/openai.py).
    "chat": frozenset(
        f"/typecase.v1.ChatService/{m}" for m in ("CreateSession", "Chat", "StreamTurnEvents", "StopTurn")
    )
    | {"/openai/v1/chat/completions"},
}
ACTIONS = tuple(ACTION_METHODS)


def clean_restriction(resources: Iterable[str], actions: Iterable[str]) -> tuple[list[str], list[str]]:
    """The key's resources ("type/id") and actions, validated; both empty for an unrestricted key."""
    resources, actions = list(resources), [a.strip().lower() for a in actions]
    if not resources and not actions:
        return [], []
    if not resources or not actions:
        field = "api_key.resources" if not resources else "api_key.actions"
        raise invalid_argument(field, "a restricted key needs both resources and actions")
    for i, value in enumerate(resources):
        kind, _, ident = value.partition("/")
        if kind not in RESOURCE_TYPES or not ident or "/" in ident or len(value) > 100:
            raise invalid_argument(f"api_key.resources[{i}]", f"'<type>/<id>' with type one of {RESOURCE_TYPES}")
    for i, action in enumerate(actions):
        if action not in ACTION_METHODS:
            raise invalid_argument(f"api_key.actions[{i}]", f"one of {', '.join(ACTIONS)}")
    return sorted(set(resources)), [a for a in ACTIONS if a in actions]


def allowed_methods(actions: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(ACTION_METHODS[a] for a in actions if a in ACTION_METHODS))
