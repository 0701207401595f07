"""A parse process: `python -m typecase.server.knowledge.parse_worker MEMORY_BYTES`, started by parse_pool.py.

It runs the parsers on untrusted documents under its own caps: an address-space limit (RLIMIT_AS) set before any
parser is imported, a CPU-time limit (RLIMIT_CPU) re-armed for every file at the CPU used so far plus the request's
`cpu_seconds` (the kernel stops the process with SIGXCPU past it), and no core dumps. It gets no secrets: the pool
starts it with a minimal environment.

Protocol, one JSON object a line. Requests on stdin: {"path", "format", "options", "cpu_seconds"}. Answers on the
descriptor that was stdout (stdout itself is pointed at stderr, so a library's print cannot corrupt the stream):
{"parsed": {"format", "page_count", "info"}}, then {"sections": [[text, page, atomic, progress], ...]} batches of
about BATCH_CHARS characters, then {"done": {"rss_bytes"}}; or, at any point, {"error": {"kind", "message",
"setting", "value"}} (with "exiting": true when the process stops after it). JSON and not pickle: the server must
not execute what a process that has just parsed a hostile document sends it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

MEMORY_SETTING = "knowledge_parse_memory_bytes"
BATCH_CHARS = 64 * 1024  # sections travel in batches: one line per paragraph cost ~55 µs each (measured)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _arm_cpu_limit(cpu_seconds: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + cpu_seconds) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _error(kind: str, message: str, setting: str = "", value: float = 0) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message, "setting": setting, "value": value}}


def _out_of_memory(exc: BaseException | None) -> bool:
    """Parsers wrap what failed (python-docx: ParseError from zlib's MemoryError; libxml2: "Memory allocation
    failed"), so the whole chain of causes is searched."""
    while exc is not None:
        if isinstance(exc, MemoryError) or "memory allocation failed" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _failure(exc: Exception) -> dict[str, Any]:
    from typecase.server.knowledge import parsers

    if isinstance(exc, parsers.UnsupportedFileType):
        return _error("unsupported", str(exc))
    if isinstance(exc, parsers.LimitExceeded):
        return _error("limit", str(exc), exc.setting, exc.value)
    if isinstance(exc, parsers.ParseError):
        return _error("parse", str(exc))
    if isinstance(exc, RecursionError):
        return _error("parse", "the document is nested too deeply to parse")
    # A parser library choking on a malformed file: the file's fault, which retrying would not fix.
    return _error("parse", f"cannot parse the file: {type(exc).__name__}: {exc}")


def _parse(request: dict[str, Any], send) -> None:
    from typecase.server.knowledge import parsers

    known = {f.name for f in fields(parsers.Options)}
    options = parsers.Options(**{k: v for k, v in request["options"].items() if k in known})
    try:
        parsed = parsers.parse(Path(request["path"]), request["format"], options)
        send({"parsed": {"format": parsed.format, "page_count": parsed.page_count, "info": parsed.info}})
        batch: list[list[Any]] = []
        size = 0
        for s in parsed.sections:
            batch.append([s.text, s.page, s.atomic, s.progress])
            size += len(s.text)
            if size >= BATCH_CHARS:
                send({"sections": batch})
                batch, size = [], 0
        if batch:
            send({"sections": batch})
    except Exception as exc:
        if _out_of_memory(exc):
            raise MemoryError from exc
        send(_failure(exc))
    else:
        send({"done": {"rss_bytes": _rss_bytes()}})


def serve(memory_bytes: int, requests: IO[str], answers: IO[str], hard_memory_bytes: int = 0) -> None:
    def send(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message) + "\n")  # ASCII: a lone surrogate in a text cannot break the stream
        answers.flush()

    os.nice(10)  # background work: on a busy machine the server's event loop gets the CPU first
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The soft cap applies; only the OCR parser raises it, up to the hard cap (parsers/ocr.py).
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, max(hard_memory_bytes, memory_bytes)))
    from typecase.server.knowledge import parsers  # noqa: F401  (imported under the cap: the cap must fit it)

    for line in requests:
        request = json.loads(line)
        _arm_cpu_limit(float(request["cpu_seconds"]))
        try:
            _parse(request, send)
        except MemoryError:
            failure = _error(
                "limit",
                f"parsing needs more than the {memory_bytes} bytes of memory a parse may use ({MEMORY_SETTING})",
                MEMORY_SETTING,
                memory_bytes,
            )
            failure["error"]["exiting"] = True  # the heap may be in any state now: the pool starts a fresh process
            send(failure)
            sys.exit(3)


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(int(sys.argv[1]), sys.stdin, answers, int(sys.argv[2]) if len(sys.argv) > 2 else 0)


if __name__ == "__main__":
    main()
