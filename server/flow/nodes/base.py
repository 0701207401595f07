"""What a node type is: its parameters (checked by validation), the outputs it declares, and how it runs.

A node runs with a NodeContext (its params, the variable scope, the services it may call, a way to stream text)
and returns a NodeResult: outputs (what `{{node_id.key}}` reads downstream), the resolved inputs it ran with,
token usage, the branch handles it takes (None: every outgoing edge), or a request for human input, in which
case the run pauses and `resume` later finishes the node with the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import grpc

from typecase.server.flow import templates
from typecase.server.flow.workers import FlowWorkers
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.ports import Generation, Knowledge
from typecase.server.rpc.principal import Principal

log = logging.getLogger("typecase.flow")
WILDCARD = None  # outputs() of a node whose output keys are only known at run time


@dataclass
class Problem:
    code: str
    message: str
    param: str = ""
    warning: bool = False


@dataclass
class NodeResult:
    outputs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    handles: list[str] | None = None  # branches taken; None = all outgoing edges
    wait: dict[str, Any] | None = None  # InputRequired as proto JSON: pause the run until an answer


@dataclass
class Services:
    """What nodes may call. Built once per engine; nodes never reach other domains' tables."""

    settings: Any
    llm: Generation | None = None
    knowledge: Knowledge | None = None
    http: Any = None  # HttpGuard (nodes/http.py), shared client and policy
    workers: FlowWorkers | None = None  # templates and regexes off the event loop; from the settings by default
    sandbox: Any = None  # Sandbox (typecase.server.sandbox), where code nodes run
    agents: Any = None  # agent_wiring.FlowAgents: toolboxes and tool calls for AGENT and TOOL nodes (set by app.py)
    # The groups a user belongs to (auth's Memberships.groups_of, set by app.py): a run's task binds its user, or
    # the flow's owner for run_as OWNER, with their groups, so what is shared with those groups opens to the run.
    groups_of: Callable[[str], Awaitable[tuple[str, ...]]] | None = None

    def __post_init__(self) -> None:
        if self.workers is None:
            self.workers = FlowWorkers.from_settings(self.settings)

    @property
    def pool(self) -> FlowWorkers:
        """The workers, always set once constructed."""
        assert self.workers is not None
        return self.workers

    async def with_groups(self, principal: Principal) -> Principal:
        if self.groups_of is None or principal.group_ids:
            return principal
        try:
            return replace(principal, group_ids=await self.groups_of(principal.user_id))
        except Exception as exc:  # the run goes on with the user's own rights (fewer, never more)
            log.warning("flow: could not load the groups of %s: %s", principal.user_id, exc)
            return principal

    async def aclose(self) -> None:
        if self.workers is not None:
            await self.workers.close()


@dataclass
class NodeContext:
    node_id: str
    node_type: int
    name: str
    params: dict[str, Any]
    scope: dict[str, Any]  # run inputs by name, node outputs by node id, sys
    services: Services
    emit_token: Callable[[str], None] = lambda text: None
    run_id: str = ""
    owner_id: str = ""
    session_id: str = ""
    history: list[dict[str, str]] = field(default_factory=list)  # chat history: [{"role", "content"}]
    prefill: dict[str, Any] | None = None  # a chat message that answers the first message-mode input node
    as_flow_owner: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None

    async def render_async(self, value: Any) -> str:
        """A parameter rendered to text (templates rendered in worker processes, never on the event loop)."""
        try:
            return templates.as_text(await self.services.pool.resolve(value, self.scope))
        except templates.TemplateFailed as exc:
            raise node_error(str(exc), self.node_id) from None

    async def resolve_async(self, value: Any) -> Any:
        """A parameter with its templates resolved, whole-value references keeping their type (rendering in
        worker processes, never on the event loop)."""
        try:
            return await self.services.pool.resolve(value, self.scope)
        except templates.TemplateFailed as exc:
            raise node_error(str(exc), self.node_id) from None

    def render(self, value: Any) -> str:
        """render_async on the event loop, for nodes not moved to it yet (http, code): a template here holds the
        whole process while it renders, up to flow_template_timeout_seconds, with no memory cap."""
        try:
            return templates.as_text(templates.resolve(value, self.scope, self.services.pool.limits))
        except templates.TemplateFailed as exc:
            raise node_error(str(exc), self.node_id) from None

    def resolve(self, value: Any) -> Any:
        """resolve_async on the event loop, for nodes not moved to it yet (see render)."""
        try:
            return templates.resolve(value, self.scope, self.services.pool.limits)
        except templates.TemplateFailed as exc:
            raise node_error(str(exc), self.node_id) from None

    def param(self, key: str, default: Any = None) -> Any:
        value = self.params.get(key)
        return default if value is None or value == "" else value


def node_error(
    message: str, node_id: str, reason: str = "NODE_FAILED", code=grpc.StatusCode.FAILED_PRECONDITION, **metadata: str
) -> TypecaseError:
    return TypecaseError(code, reason, message, {"node_id": node_id, **metadata})


def as_int(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


class NodeSpec:
    """One node type. Subclasses set `type`, `kind` and override what they need."""

    type: ClassVar[int]
    kind: ClassVar[str]  # short name: "llm", "knowledge_retrieval", ...
    waits_for_input: ClassVar[bool] = False
    branches: ClassVar[bool] = False
    # Params that may hold secrets (credentials, code): shown only to the flow's editors (flow/redact.py).
    secret_params: ClassVar[tuple[str, ...]] = ()

    def validate(self, params: dict[str, Any]) -> list[Problem]:
        """Problems with the params alone (templates and references are checked by the graph validator)."""
        return []

    def outputs(self, params: dict[str, Any]) -> set[str] | None:
        """Output keys downstream nodes may reference; WILDCARD when only known at run time."""
        return set()

    def template_params(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """(param path, template text) of every parameter that is a template."""
        return []

    def expression_params(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """(param path, expression) of every parameter that is a condition expression."""
        return []

    def handles(self, params: dict[str, Any]) -> set[str] | None:
        """Branch handles edges may leave through; None for a node without branches."""
        return None

    def unavailable(self, services: Services) -> str | None:
        """Why nodes of this type cannot run on this server (a validation warning; running one fails), or None."""
        return None

    def interactive(self, params: dict[str, Any]) -> bool:
        """Whether this node (as configured) waits for a person."""
        return self.waits_for_input

    async def run(self, ctx: NodeContext) -> NodeResult:
        raise NotImplementedError

    async def resume(self, ctx: NodeContext, answer: dict[str, Any], partial: dict[str, Any]) -> NodeResult:
        """Finish a node that waited for input, given the person's answer (already checked by check_answer)."""
        raise NotImplementedError

    def check_answer(self, request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise an answer to this node's input request (raises INVALID_ARGUMENT)."""
        return answer


def required(params: dict[str, Any], *keys: str) -> list[Problem]:
    problems = []
    for key in keys:
        value = params.get(key)
        if value is None or value == "" or value == [] or value == {}:
            problems.append(Problem("MISSING_PARAM", f"parameter {key!r} is required", key))
    return problems


def text_params(params: dict[str, Any], *keys: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for key in keys:
        if key in params:
            found.extend((path, text) for path, text in templates.strings(params[key], key))
    return found
