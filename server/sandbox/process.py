"""One sandbox process: started in its own session, fed its request, read with a cap on what it may print, killed
(its whole process group) when it ends, overruns its wall time, prints too much, or its caller is cancelled.

communicate() would buffer whatever the code writes to fd 1 for as long as it runs; reading in chunks and stopping
at the cap keeps the server's memory bounded by the output limit instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("typecase.sandbox")

CHUNK_BYTES = 64 * 1024
FINISH_SECONDS = 5.0  # after the kill: sandboxed, every process is gone at once; this bounds the unsafe mode


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes


class TooMuchOutput(Exception):
    pass


async def run(
    argv: Sequence[str],
    payload: bytes,
    *,
    timeout: float,
    max_output_bytes: int,
    pass_fds: Sequence[int] = (),
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Finished:
    """Run to the end; TimeoutError after `timeout` seconds, TooMuchOutput past `max_output_bytes` on stdout (stderr
    keeps its last `max_output_bytes`). Either way, and on cancellation, the process group is killed first."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds,
        env=env if env is not None else {},
        cwd=cwd,
        start_new_session=True,
    )
    stdout = stderr = b""
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr, _ = await asyncio.gather(
                read_capped(process.stdout, max_output_bytes, strict=True),
                read_capped(process.stderr, max_output_bytes, strict=False),
                feed(process.stdin, payload),
            )
            await process.wait()
    finally:
        kill_group(process.pid)
        try:
            await asyncio.wait_for(finish(process), FINISH_SECONDS)
        except TimeoutError:  # only possible unsandboxed: a process that left the group holds a pipe
            log.warning("a process started by code still holds its pipes after the code was killed")
    return Finished(process.returncode if process.returncode is not None else -signal.SIGKILL, stdout, stderr)


async def finish(process: asyncio.subprocess.Process) -> None:
    """Read what is left (a reader that stopped at the cap has paused its pipe, and asyncio's wait() returns only
    once every pipe is closed), then wait for the exit status."""
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            while await stream.read(CHUNK_BYTES):
                pass
    await process.wait()


async def feed(stream: asyncio.StreamWriter | None, payload: bytes) -> None:
    assert stream is not None
    try:
        if not stream.is_closing():  # closed: it already exited (uvloop raises RuntimeError on a write then)
            stream.write(payload)
            await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it exited without reading: its exit status and stderr tell why
    finally:
        stream.close()


async def read_capped(stream: asyncio.StreamReader | None, cap: int, *, strict: bool) -> bytes:
    assert stream is not None
    data = bytearray()
    while chunk := await stream.read(CHUNK_BYTES):
        data += chunk
        if len(data) > cap:
            if strict:
                raise TooMuchOutput()
            del data[:-cap]
    return bytes(data)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
