"""Code: {"code": "def main(**inputs) -> dict: ...", "inputs": {name: template}, "timeout_ms"}. Runs the code in a
separate Python process (isolated mode, no site-packages, empty environment, a temporary working directory) with
limits on CPU time (RLIMIT_CPU), address space (RLIMIT_AS), open files, written file size and child processes,
and a wall-clock timeout after which the process is killed; stopping the run kills it too. `main`'s returned
dict becomes the node's outputs.

Starting processes is refused (RLIMIT_NPROC, which root ignores, plus the process functions of `os`, `subprocess`
and `multiprocessing` replaced), and the process group is killed when the node ends. This contains runaway and
buggy code; it is not a security boundary against hostile code (the process can still read files the server's
user can read, open network connections, and reach the system calls through ctypes). Disable the node with
flow_code_enabled=false where flow authors are not trusted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile

from typecase.server.flow.nodes.base import NodeContext, NodeResult, NodeSpec, Problem, as_int, node_error, required
from typecase.server.flow import templates
from typecase.v1 import flow_pb2

RUNNER = r"""
import io, json, resource, sys
data = json.loads(sys.stdin.buffer.read())
for limit, value in ((resource.RLIMIT_CPU, data["cpu"]), (resource.RLIMIT_AS, data["mem"]),
                     (resource.RLIMIT_FSIZE, data["fsize"]), (resource.RLIMIT_NOFILE, 64),
                     (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0)):
    try:
        resource.setrlimit(limit, (value, value))
    except (ValueError, OSError):
        pass
import os
def _refused(*args, **kwargs):
    raise PermissionError("starting processes is not allowed in a code node")
for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve", "execvp",
             "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "kill",
             "killpg"):
    if hasattr(os, name):
        setattr(os, name, _refused)
sys.modules["subprocess"] = None
sys.modules["_posixsubprocess"] = None
sys.modules["multiprocessing"] = None
out = sys.stdout
sys.stdout = io.StringIO()
try:
    namespace = {"__name__": "flow_code"}
    exec(compile(data["code"], "<code node>", "exec"), namespace)
    main = namespace.get("main")
    if not callable(main):
        raise TypeError("the code must define main(**inputs)")
    result = main(**data["inputs"])
    if not isinstance(result, dict):
        raise TypeError("main() must return a dict, not " + type(result).__name__)
    text = json.dumps({"ok": True, "outputs": result, "stdout": sys.stdout.getvalue()[-4000:]}, default=str)
except MemoryError:
    text = json.dumps({"ok": False, "error": "MemoryError: the code used more memory than allowed"})
except BaseException as exc:
    text = json.dumps({"ok": False, "error": type(exc).__name__ + ": " + str(exc)[:2000]})
out.write(text)
out.flush()
"""


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

    async def run(self, ctx: NodeContext) -> NodeResult:
        settings = ctx.services.settings
        if not settings.flow_code_enabled:
            raise node_error("code nodes are disabled on this server (flow_code_enabled)", ctx.node_id)
        inputs = ctx.resolve(ctx.params.get("inputs") or {})
        timeout = min(as_int(ctx.params.get("timeout_ms"), int(settings.flow_code_timeout_seconds * 1000)) / 1000,
                      settings.flow_code_timeout_seconds)
        payload = json.dumps({
            "code": str(ctx.params.get("code") or ""), "inputs": inputs,
            "cpu": max(1, int(settings.flow_code_cpu_seconds)), "mem": int(settings.flow_code_memory_mb) * 1024 * 1024,
            "fsize": int(settings.flow_code_max_output_bytes),
        }, default=str).encode()
        outputs = await run_code(payload, timeout, settings.flow_code_max_output_bytes, ctx.node_id)
        return NodeResult(outputs=outputs, inputs={"inputs": inputs})


async def run_code(payload: bytes, timeout: float, max_bytes: int, node_id: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="typecase-code-") as workdir:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", RUNNER,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=workdir, env={"PATH": os.defpath, "LANG": "C.UTF-8"}, start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(payload), max(timeout, 0.001))
        except TimeoutError:
            raise node_error(f"the code ran longer than {timeout:g}s and was stopped", node_id,
                             limit="time") from None
        finally:
            try:  # the process and anything it left behind in its group
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if process.returncode is None:
                await process.wait()
    if len(stdout) > max_bytes:
        raise node_error(f"the code's result is larger than {max_bytes} bytes", node_id)
    if process.returncode != 0 or not stdout:
        if process.returncode in (-signal.SIGKILL, -signal.SIGXCPU):
            raise node_error("the code used more CPU time than allowed and was stopped", node_id, limit="cpu")
        detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
        raise node_error(f"the code failed: {detail[0][:500]}", node_id)
    try:
        result = json.loads(stdout)
    except ValueError:
        raise node_error("the code's result is not valid JSON", node_id) from None
    if not result.get("ok"):
        raise node_error(f"the code failed: {result.get('error')}", node_id)
    return result["outputs"]
