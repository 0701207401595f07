"""What the tools domain uses of the rest of Typecase, as typed Protocols that app.py fills in (a domain never
imports another): knowledge search and flow runs under the caller's rights, the http nodes' SSRF-guarded client,
and the secret box that seals provider keys. Every method runs under the caller's principal (bound by the
interceptor, or by the chat or flow domain calling the tools API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class SecretBox(Protocol):
    def encrypt(self, plaintext: str) -> str: ...

    def decrypt(self, token: str) -> str | None: ...


class GuardedReply(Protocol):
    status_code: int
    headers: dict[str, str]
    content: bytes
    encoding: str | None


class GuardedHttp(Protocol):
    """The flow http node's client: resolves and checks every hop against the SSRF policy, pins the address."""

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to; raises ssrf.Blocked when the host may not be reached."""
        ...

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        params: dict[str, str],
        content: bytes | None,
        json_body: Any,
        timeout: float,
        max_bytes: int,
    ) -> GuardedReply: ...


@dataclass
class KnowledgeHit:
    text: str
    score: float
    kb_id: str
    file_name: str = ""


class KnowledgeSearch(Protocol):
    async def search(self, query: str, kb_ids: list[str], top_k: int) -> list[KnowledgeHit]:
        """Search the given bases with the caller's rights (NOT_FOUND for a base it may not read)."""
        ...


@dataclass
class FlowInfo:
    id: str
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)  # JSON Schema of the start variables


class FlowRunner(Protocol):
    async def runnable_flows(self, limit: int) -> list[FlowInfo]:
        """Published flows the caller may run, at most `limit`."""
        ...

    async def flow(self, flow_id: str) -> FlowInfo:
        """One of them; NOT_FOUND when the caller may not run it or it is not published."""
        ...

    async def run(self, flow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the flow to its end; its outputs ({"answer": ..., ...})."""
        ...
