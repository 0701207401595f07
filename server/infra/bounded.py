"""Worker processes for CPU-bound computations on user-supplied input, with a hard deadline and a memory cap.

A flow author's template can loop, build huge strings or call C code that runs for seconds. In the server's own
process that blocks the event loop (measured: nested `range()` loops held gRPC, HTTP and the proxy for 4.6 s), and a
thread does not help: a thread cannot be stopped, and one long C call (a `str.replace` to a gigabyte, a sort) holds
the GIL for as long as it runs. A worker process can be killed at its deadline, and its address space is capped
(RLIMIT_AS), so whatever the input does costs at most `timeout` seconds of one worker and `memory_bytes` of memory.

`WorkerPool(target, ...)` runs `target` ("package.module:function", a function of one JSON object returning a JSON
value) in up to `workers` processes, started on first use and replaced when killed. Requests and replies are one
JSON line each over the worker's stdin and stdout: JSON rather than pickle, so that a worker a hostile input took
over cannot make the server unpickle objects. Workers start with an empty environment (no secrets to read), and
a SIGALRM of their own ends them should the server die while they compute.
Measured on the 2-core VM (uvloop): rendering a prompt template through a worker takes 0.17-0.23 ms (median)
against 0.03 ms in place; starting a worker takes 0.1-0.5 s, once, outside any deadline, and holds the event loop
under 15 ms (a loop-lag probe during twelve renders with four kills: p99 5.4 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
from typing import Any

STARTUP_TIMEOUT_SECONDS = 30.0
ALARM_GRACE_SECONDS = 5.0
WORKER_NICENESS = 10
READY = b"ready\n"


class WorkerError(Exception):
    """The computation raised; the message is the worker's account of it."""


class DeadlineExceeded(WorkerError):
    """The computation ran past its deadline; its worker was killed."""


class OutOfMemory(WorkerError):
    """The computation needed more than the worker's memory cap; its worker was replaced."""


class _Worker:
    """One worker process and asyncio streams over its pipes."""

    def __init__(self, proc: subprocess.Popen, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader):
        self.proc, self.stdin, self.stdout = proc, stdin, stdout

    @classmethod
    async def start(cls, args: list[str], env: dict[str, str], max_line_bytes: int) -> _Worker:
        # Popen (vfork) in a thread: uvloop's own spawn forks on the event loop, which was measured to hold it
        # for 60-130 ms in a server of 330 MB.
        proc = await asyncio.to_thread(
            subprocess.Popen, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True
        )
        assert proc.stdin is not None and proc.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=max_line_bytes)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, proc.stdin)
        return cls(proc, asyncio.StreamWriter(transport, protocol, reader, loop), reader)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.stdin.close()
        await asyncio.to_thread(self.proc.wait)


class WorkerPool:
    def __init__(self, target: str, *, workers: int, memory_bytes: int, max_reply_bytes: int):
        self.target = target
        self.memory_bytes = memory_bytes
        self.max_reply_bytes = max_reply_bytes
        self._size = workers
        self._slots: asyncio.Queue[_Worker | None] | None = None  # a slot holds a live worker, or None: start one
        self._live: set[_Worker] = set()

    async def call(self, request: dict[str, Any], timeout: float) -> Any:
        """target(request) in a worker; raises DeadlineExceeded after `timeout` seconds of running, OutOfMemory,
        or WorkerError when the target raised. Waiting for a free worker does not count against `timeout`."""
        if self._slots is None:
            self._slots = asyncio.Queue()
            for _ in range(self._size):
                self._slots.put_nowait(None)
        slots = self._slots
        worker = await slots.get()
        reusable = False
        try:
            if worker is None or not worker.alive:
                worker = None
                worker = await self._start()
            answer = await self._exchange(worker, {"timeout": timeout, "request": request}, timeout)
            reusable = "memory" not in answer
        finally:
            if worker is not None and not reusable:  # past its deadline, dead, or cancelled mid-request
                self._live.discard(worker)
                slots.put_nowait(None)
                await asyncio.shield(worker.kill())
            else:
                slots.put_nowait(worker)
        if "value" in answer:
            return answer["value"]
        if "memory" in answer:
            raise OutOfMemory(f"needed more than {self.memory_bytes} bytes of memory")
        raise WorkerError(str(answer.get("error")))

    async def _exchange(self, worker: _Worker, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"
        try:
            async with asyncio.timeout(timeout):
                worker.stdin.write(line)
                await worker.stdin.drain()
                reply = await worker.stdout.readline()
        except TimeoutError:
            raise DeadlineExceeded(f"took longer than {timeout:g}s") from None
        except ValueError:  # the reply line is longer than the stream's limit
            raise WorkerError(f"the result is larger than {self.max_reply_bytes} bytes") from None
        except ConnectionError:
            reply = b""
        if not reply:
            raise WorkerError("the worker process ended unexpectedly")
        try:
            answer = json.loads(reply)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise WorkerError("the worker process sent an unreadable reply")
        return answer

    async def _start(self) -> _Worker:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        args = [sys.executable, "-m", __name__, self.target, str(self.memory_bytes)]
        worker = await _Worker.start(args, env, self.max_reply_bytes)
        self._live.add(worker)
        ready = b""
        try:
            ready = await asyncio.wait_for(worker.stdout.readline(), STARTUP_TIMEOUT_SECONDS)
        finally:
            if ready != READY:
                self._live.discard(worker)
                await asyncio.shield(worker.kill())
        if ready != READY:
            raise WorkerError(f"the worker process for {self.target} did not start")
        return worker

    async def close(self) -> None:
        workers, self._live, self._slots = list(self._live), set(), None
        await asyncio.gather(*(worker.kill() for worker in workers), return_exceptions=True)


def _serve(target: str, memory_bytes: int) -> None:
    """The worker's loop: one JSON request per stdin line, one JSON reply per stdout line."""
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.nice(WORKER_NICENESS)  # a spinning worker yields the CPU to the server it works for
    out = sys.stdout.buffer
    out.write(READY)
    out.flush()
    for line in sys.stdin.buffer:
        fatal = False
        try:
            message = json.loads(line)
            # A backstop for the server's own kill at the deadline, should the server be gone: SIGALRM's default
            # action ends the process, even in the middle of a C call.
            signal.setitimer(signal.ITIMER_REAL, float(message["timeout"]) + ALARM_GRACE_SECONDS)
            reply: dict[str, Any] = {"value": function(message["request"])}
        except MemoryError:
            reply, fatal = {"memory": True}, True
        except Exception as exc:  # the target's errors are the caller's to report
            reply = {"error": str(exc) or type(exc).__name__}
        try:
            data = json.dumps(reply, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        except MemoryError:
            data, fatal = b'{"memory":true}', True
        signal.setitimer(signal.ITIMER_REAL, 0)
        out.write(data + b"\n")
        out.flush()
        if fatal:  # state after a MemoryError is not to be trusted: the pool starts a new worker
            return


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
