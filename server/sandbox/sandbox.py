"""The one runner for untrusted Python: `await sandbox.run_python(code, inputs, limits)`.

Used by flow code nodes, and meant for any later tool that runs code. The code runs as its own `python -I -S`
inside bubblewrap (command.py: namespaces, only the Python runtime visible, no network, a seccomp filter, an
unprivileged uid) under per-run limits: wall time (killed by the server), CPU time, address space, file size,
threads, the size of its answer. What went wrong comes back as a typed error (errors.py).

Fail closed: `start()` checks once that the sandbox works (bubblewrap found, the runtime located, the filter
built, then a real run that must come back as a non-root user whose fork is refused) and keeps the verdict; until
then, and when it failed, `run_python` raises SandboxUnavailable with the reason, which names what to install.
Only `allow_unsandboxed` (the loudly named TYPECASE_SANDBOX_UNSAFE_ALLOW_UNSANDBOXED) runs code without it, as a
plain child process with the same limits, and says so at WARNING.

Measured here (bench/flow/sandbox.py, interleaved, on the shared 2-core VM at load 6-12): a sandboxed run costs
1.2-1.6x the plain `python -I -S` process it replaces (+12 to +50 ms on 55-80 ms). The start-up check takes
0.8-1.2 s the first time in a process (mostly ldd, runtime.py) and ~0.1 s after; App.start overlaps it with the
resources' start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typecase.server.sandbox import command, process
from typecase.server.sandbox.errors import CodeFailed, LimitExceeded, SandboxUnavailable
from typecase.server.sandbox.runtime import Runtime, RuntimeUnavailable, base_interpreter, discover
from typecase.server.sandbox.seccomp import SeccompUnavailable, bpf_pipe, filter_bpf

log = logging.getLogger("typecase.sandbox")

PROGRAM = (Path(__file__).with_name("inside.py")).read_text()
MiB = 1024 * 1024
INSTALL = "install bubblewrap (Debian/Ubuntu: apt install bubblewrap; Fedora: dnf install bubblewrap)"
KILLED = {signal.SIGKILL, signal.SIGXCPU}

SELF_CHECK = """
import os
def main():
    try:
        pid = os.fork()
    except PermissionError:
        forked = False
    else:
        if pid == 0:
            os._exit(0)
        forked = True
    return {"uid": os.getuid(), "forked": forked, "env": sorted(os.environ)}
"""


@dataclass(frozen=True)
class SandboxConfig:
    bwrap_path: str = "bwrap"
    uid: int = 65534  # host uid and gid of the code when the server runs as root
    gid: int = 65534
    max_threads: int = 16
    max_open_files: int = 64
    tmp_bytes: int = 16 * MiB
    max_running: int = 8  # runs at once; the others wait (their wall time starts when they run)
    probe_timeout_seconds: float = 15.0
    allow_unsandboxed: bool = False  # UNSAFE


@dataclass(frozen=True)
class Limits:
    wall_seconds: float
    cpu_seconds: int
    memory_bytes: int
    output_bytes: int  # the answer (outputs and the end of stdout, as JSON)
    file_bytes: int  # the largest file it may write


@dataclass
class Result:
    outputs: dict[str, Any]
    stdout: str


class Sandbox:
    def __init__(self, config: SandboxConfig):
        self.config = config
        self.refusal: str | None = "the sandbox has not been checked yet (Sandbox.start)"
        self.unsandboxed = False
        self._bwrap = ""
        self._runtime: Runtime | None = None
        self._bpf = b""
        self._slots = asyncio.Semaphore(config.max_running)

    @property
    def available(self) -> bool:
        """Whether code runs at all (in the sandbox, or unsandboxed because an admin allowed it)."""
        return self.refusal is None or self.unsandboxed

    def status(self) -> dict[str, Any]:
        if self.refusal is None:
            return {"available": True, "mode": "bubblewrap", "detail": self._bwrap}
        if self.unsandboxed:
            return {"available": True, "mode": "UNSANDBOXED", "detail": self.refusal}
        return {"available": False, "mode": "refused", "detail": self.refusal}

    async def start(self) -> None:
        """Check once that the sandbox works, and keep the verdict."""
        try:
            await self._check()
            self.refusal = None
            log.info(
                "code sandbox: bubblewrap (%s), code runs as %s",
                self._bwrap,
                f"uid {self.config.uid}" if os.geteuid() == 0 else "the server's uid in a user namespace",
            )
        except SandboxUnavailable as exc:
            self.refusal = exc.message
            if self.config.allow_unsandboxed:
                self.unsandboxed = True
                log.warning(
                    "UNSAFE: code nodes run WITHOUT A SANDBOX, as plain processes of the server's user "
                    "(TYPECASE_SANDBOX_UNSAFE_ALLOW_UNSANDBOXED): any flow author can read this server's "
                    "secrets. The sandbox is unavailable: %s",
                    self.refusal,
                )
            else:
                log.warning("code nodes are refused: %s", self.refusal)

    async def _check(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(
                f"the code sandbox needs Linux namespaces (bubblewrap), which {sys.platform} "
                "does not have: run the server on Linux (a container will do)"
            )
        found = shutil.which(self.config.bwrap_path)
        if found is None:
            raise SandboxUnavailable(
                f"bubblewrap was not found at {self.config.bwrap_path!r}: {INSTALL}, or set TYPECASE_SANDBOX_BWRAP_PATH"
            )
        try:
            self._runtime = await asyncio.to_thread(discover, base_interpreter())
            self._bpf = filter_bpf()
        except (RuntimeUnavailable, SeccompUnavailable) as exc:
            raise SandboxUnavailable(str(exc)) from None
        self._bwrap = found
        limits = Limits(
            wall_seconds=self.config.probe_timeout_seconds,
            cpu_seconds=5,
            memory_bytes=256 * MiB,
            output_bytes=64 * 1024,
            file_bytes=64 * 1024,
        )
        try:
            seen = (await self._run(SELF_CHECK, {}, limits, "main", sandboxed=True)).outputs
        except (CodeFailed, LimitExceeded) as exc:
            raise SandboxUnavailable(f"bubblewrap ({found}) failed its self-check: {exc.message}") from None
        except OSError as exc:
            raise SandboxUnavailable(f"bubblewrap ({found}) could not be started: {exc}") from None
        if seen.get("uid") == 0 or seen.get("forked") or set(seen.get("env", ())) - {"LANG", "HOME", "PWD"}:
            raise SandboxUnavailable(f"bubblewrap ({found}) failed its self-check: the code saw {seen}")

    async def run_python(self, code: str, inputs: dict[str, Any], limits: Limits, entry: str | None = "main") -> Result:
        """Run `code`, then `entry(**inputs)` (which must return a dict; entry=None: only the code, `inputs` a
        global). Raises SandboxUnavailable, LimitExceeded or CodeFailed."""
        if self.refusal is not None and not self.unsandboxed:
            raise SandboxUnavailable(self.refusal)
        async with self._slots:
            return await self._run(code, inputs, limits, entry, sandboxed=self.refusal is None)

    async def _run(
        self, code: str, inputs: dict[str, Any], limits: Limits, entry: str | None, *, sandboxed: bool
    ) -> Result:
        request = {
            "code": code,
            "inputs": inputs,
            "entry": entry,
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "file_bytes": limits.file_bytes,
                "output_bytes": limits.output_bytes,
                "threads": self.config.max_threads,
                "open_files": self.config.max_open_files,
            },
            "drop": [self.config.uid, self.config.gid] if sandboxed and os.geteuid() == 0 else None,
            "allow_root": not sandboxed,
        }
        payload = json.dumps(request, default=str).encode()
        try:
            if sandboxed:
                assert self._runtime is not None
                seccomp_fd = bpf_pipe(self._bpf)
                try:
                    argv = command.bwrap_argv(
                        self._bwrap,
                        self._runtime,
                        PROGRAM,
                        seccomp_fd=seccomp_fd,
                        tmp_bytes=self.config.tmp_bytes,
                        uid=self.config.uid,
                        gid=self.config.gid,
                    )
                    finished = await process.run(
                        argv,
                        payload,
                        timeout=limits.wall_seconds,
                        max_output_bytes=limits.output_bytes,
                        pass_fds=(seccomp_fd,),
                    )
                finally:
                    os.close(seccomp_fd)
            else:
                with tempfile.TemporaryDirectory(prefix="typecase-code-") as workdir:
                    finished = await process.run(
                        command.unsandboxed_argv(base_interpreter(), PROGRAM),
                        payload,
                        timeout=limits.wall_seconds,
                        max_output_bytes=limits.output_bytes,
                        env={"LANG": "C.UTF-8", "HOME": workdir},
                        cwd=workdir,
                    )
        except TimeoutError:
            raise LimitExceeded("time", f"the code ran longer than {limits.wall_seconds:g}s and was stopped") from None
        except process.TooMuchOutput:
            raise LimitExceeded("output", f"the code's result is larger than {limits.output_bytes} bytes") from None
        return self._answer(finished, limits)

    def _answer(self, finished: process.Finished, limits: Limits) -> Result:
        signum = finished.returncode - 128 if finished.returncode > 128 else -finished.returncode
        if finished.returncode != 0 and signum in KILLED:
            raise LimitExceeded(
                "cpu", f"the code used more CPU time than allowed ({limits.cpu_seconds}s) and was stopped"
            )
        if finished.returncode != 0 or not finished.stdout:
            lines = finished.stderr.decode(errors="replace").strip().splitlines()
            detail = lines[-1][:500] if lines else f"exit status {finished.returncode}"
            raise CodeFailed(f"the code ended without a result: {detail}")
        try:
            answer = json.loads(finished.stdout)
        except ValueError:
            raise CodeFailed("the code's result is not valid JSON (did it write to file descriptor 1?)") from None
        if answer.get("ok"):
            return Result(answer["outputs"], answer.get("stdout", ""))
        limit, error = answer.get("limit"), answer.get("error", "")
        if limit:
            raise LimitExceeded(limit, self._limit_message(limit, limits, error))
        raise CodeFailed(f"the code failed: {error}")

    def _limit_message(self, limit: str, limits: Limits, error: str) -> str:
        return {
            "memory": f"the code used more memory than allowed ({limits.memory_bytes // MiB} MiB): {error}",
            "cpu": f"the code used more CPU time than allowed ({limits.cpu_seconds}s) and was stopped",
            "file_size": f"the code wrote a file larger than allowed ({limits.file_bytes} bytes): {error}",
            "tmp_space": f"the code filled its temporary space ({self.config.tmp_bytes} bytes): {error}",
            "threads": f"the code started more threads than allowed ({self.config.max_threads}): {error}",
        }.get(limit, error)
