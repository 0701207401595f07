"""Code: {"code": "def main(**inputs) -> dict: ...", "inputs": {name: template}, "timeout_ms"}. `main`'s returned
dict becomes the node's outputs.

The code runs in the server's sandbox (typecase.server.sandbox: its own Python in bubblewrap namespaces, seeing
only the Python runtime, no network, as an unprivileged user, new processes refused) under the flow_code_* limits:
wall time (timeout_ms may only shorten it), CPU time, memory, the size of its result and of any file it writes.
Stopping the run kills it. Without a working sandbox the node is refused with FAILED_PRECONDITION naming what to
install, and validation warns about it (CODE_UNAVAILABLE); flow_code_enabled=false refuses it on purpose.
"""

from __future__ import annotations

from typecase.server.flow import templates
from typecase.server.flow.nodes.base import (
    NodeContext,
    NodeResult,
    NodeSpec,
    Problem,
    Services,
    as_int,
    node_error,
    required,
)
from typecase.server.sandbox import LimitExceeded, Limits, SandboxError
from typecase.v1 import flow_pb2

MiB = 1024 * 1024


class Code(NodeSpec):
    type = flow_pb2.NODE_TYPE_CODE
    kind = "code"
    secret_params = ("code",)

    def validate(self, params):
        problems = required(params, "code")
        if params.get("inputs") is not None and not isinstance(params.get("inputs"), dict):
            problems.append(Problem("INVALID_PARAM", "inputs must be an object of name: value", "inputs"))
        code = params.get("code")
        if isinstance(code, str) and code:
            try:
                compile(code, "<code node>", "exec", dont_inherit=True)  # syntax check only; never executed here
            except SyntaxError as exc:
                problems.append(Problem("INVALID_PARAM", f"syntax error on line {exc.lineno}: {exc.msg}", "code"))
            if "def main" not in code:
                problems.append(Problem("INVALID_PARAM", "the code must define main(**inputs)", "code"))
        return problems

    def outputs(self, params):
        return None  # whatever main() returns

    def template_params(self, params):
        inputs = params.get("inputs")
        return list(templates.strings(inputs, "inputs")) if isinstance(inputs, dict) else []

    def unavailable(self, services: Services) -> str | None:
        if not services.settings.flow_code_enabled:
            return "code nodes are disabled on this server (flow_code_enabled=false)"
        if services.sandbox is None or not services.sandbox.available:
            refusal = services.sandbox.refusal if services.sandbox is not None else "no sandbox was configured"
            return f"code nodes cannot run on this server: {refusal}"
        return None

    async def run(self, ctx: NodeContext) -> NodeResult:
        why = self.unavailable(ctx.services)
        if why:
            raise node_error(why, ctx.node_id, unavailable="code")
        settings = ctx.services.settings
        inputs = await ctx.resolve_async(ctx.params.get("inputs") or {})
        timeout = min(
            as_int(ctx.params.get("timeout_ms"), int(settings.flow_code_timeout_seconds * 1000)) / 1000,
            settings.flow_code_timeout_seconds,
        )
        limits = Limits(
            wall_seconds=max(timeout, 0.001),
            cpu_seconds=settings.flow_code_cpu_seconds,
            memory_bytes=settings.flow_code_memory_mb * MiB,
            output_bytes=settings.flow_code_max_output_bytes,
            file_bytes=settings.flow_code_max_output_bytes,
        )
        try:
            result = await ctx.services.sandbox.run_python(str(ctx.params.get("code") or ""), inputs, limits)
        except LimitExceeded as exc:
            raise node_error(exc.message, ctx.node_id, limit=exc.limit) from None
        except SandboxError as exc:
            raise node_error(exc.message, ctx.node_id) from None
        return NodeResult(outputs=result.outputs, inputs={"inputs": inputs})
