"""Documents are parsed in child processes under memory and CPU caps, so a hostile file fails that file only.

Issue 18: a 366 KB .docx grew the server by 670 MB (measured) while python-docx parsed it in a thread, and the memory
stayed. Now every parse runs in a parse_worker.py process started with a minimal environment (no secrets) that caps
its own address space (knowledge_parse_memory_bytes) and the CPU time of each file (knowledge_parse_cpu_seconds).
At most knowledge_parse_processes run at once; an idle process is reused for the next file and retired when its
RSS has grown past knowledge_parse_recycle_rss_bytes. Measured (bench/knowledge/parse_overhead.py, interleaved):
a reused process adds ~0.5 ms to a small file (median over txt/md/html/docx/xlsx/csv/pdf/json of a few KB, against
parsing in a thread here), starting one costs its first file ~0.2 s. A process that dies (the kernel's SIGXCPU, a crash
on malloc failure, a kill) fails its file with a reason naming the cap, and the next file gets a fresh process.

Sections stream back as the parser yields them, in JSON lines of ~64K characters: the pipe's buffer is the
backpressure, so the server holds no more of a document than before (the chunker's window). Why not a library pool:
concurrent.futures and loky break every pending task when one worker dies, multiprocessing.Pool hangs on a dead
worker, and none of them (nor pebble) streams a generator's items back; what is left is a pipe and a protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from typecase.server.knowledge import parsers
from typecase.server.knowledge.chunking import Section
from typecase.server.knowledge.parse_worker import BATCH_CHARS

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "HOME", "PYTHONPATH", "VIRTUAL_ENV")


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
    env["OPENPYXL_DEFUSEDXML"] = "True"  # openpyxl parses through defusedxml (no entity expansion)
    return env


@dataclasses.dataclass(frozen=True)
class Limits:
    processes: int = 2
    memory_bytes: int = 1024 * 1024 * 1024
    cpu_seconds: float = 300.0
    recycle_rss_bytes: int = 128 * 1024 * 1024  # every parser imported: ~70 MiB (measured)
    # OCR (onnxruntime + OpenCV) maps ~1.4 GiB of address space for ~0.6 GiB resident (measured): the OCR parser
    # raises its process's soft cap to this (the hard cap) before loading the engine; a process that ran OCR is
    # past recycle_rss_bytes afterwards and is replaced, so other files never run under the higher cap.
    ocr_memory_bytes: int = 2048 * 1024 * 1024


class _Child:
    """One parse process and the state of its conversation: idle, busy (a file is streaming) or dead."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "typecase.server.knowledge.parse_worker",
                str(limits.memory_bytes),
                str(max(limits.ocr_memory_bytes, limits.memory_bytes)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests, self.answers = self.proc.stdin, self.proc.stdout
        self.state = "idle"
        self.rss_bytes = 0
        self.max_line = 0

    def reusable(self) -> bool:
        return self.state == "idle" and self.rss_bytes <= self.limits.recycle_rss_bytes and self.proc.poll() is None

    def begin(self, path: Path, fmt: str, options: parsers.Options) -> parsers.Parsed:
        # The largest line: a batch topped up by a whole structured document (or one PDF stream's text), \u-escaped.
        self.max_line = 6 * (max(options.max_structured_bytes, options.pdf_max_stream_bytes) + BATCH_CHARS) + 65536
        request = {
            "path": str(path),
            "format": fmt,
            "options": dataclasses.asdict(options),
            "cpu_seconds": self.limits.cpu_seconds,
        }
        self.state = "busy"
        try:
            self.requests.write(json.dumps(request).encode() + b"\n")
            self.requests.flush()
        except OSError:
            raise self._died() from None
        header = self._receive()["parsed"]
        return parsers.Parsed(header["format"], self._sections(), int(header["page_count"]), dict(header["info"]))

    def _sections(self) -> Iterator[Section]:
        while True:
            message = self._receive()
            if "sections" in message:
                try:
                    sections = [
                        Section(str(text), int(page), bool(atomic), None if done is None else float(done))
                        for text, page, atomic, done in message["sections"]
                    ]
                except (TypeError, ValueError) as exc:
                    self.kill()
                    raise parsers.ParseError(f"the parser process broke its protocol ({exc})") from None
                yield from sections
            else:
                self.rss_bytes = int(message["done"]["rss_bytes"])
                self.state = "idle"
                return

    def _receive(self) -> dict[str, Any]:
        line = self.answers.readline(self.max_line + 1)
        if not line:
            raise self._died()
        try:
            if len(line) > self.max_line:
                raise ValueError(f"a message over {self.max_line} bytes")
            message = json.loads(line)
            if not isinstance(message, dict) or not message.keys() & {"parsed", "sections", "done", "error"}:
                raise ValueError("an unknown message")
        except ValueError as exc:
            self.kill()
            raise parsers.ParseError(f"the parser process broke its protocol ({exc})") from None
        if "error" in message:
            self.state = "dead" if message["error"].get("exiting") else "idle"
            raise _error(message["error"])
        return message

    def _died(self) -> parsers.ParseError:
        self.state = "dead"
        try:
            code = self.proc.wait(timeout=5)  # its end of the pipe closed: it is exiting
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        memory = self.limits.memory_bytes
        if code == -signal.SIGXCPU:
            return parsers.LimitExceeded(
                f"parsing took more than the {self.limits.cpu_seconds:g} CPU seconds a file may use "
                "(knowledge_parse_cpu_seconds)",
                "knowledge_parse_cpu_seconds",
                self.limits.cpu_seconds,
            )
        how = f"exit code {code}"
        if code is not None and code < 0:
            how = f"signal {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"signal {-code}"
        return parsers.LimitExceeded(
            f"the parser process stopped ({how}) on this document; a parse may use at most {memory} bytes of memory "
            "(knowledge_parse_memory_bytes), the usual cause",
            "knowledge_parse_memory_bytes",
            memory,
        )

    def kill(self) -> None:
        self.state = "dead"
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.requests, self.answers):
            with contextlib.suppress(OSError):
                pipe.close()


def _error(error: dict[str, Any]) -> ValueError:
    message = str(error.get("message", "the parser failed"))
    if error.get("kind") == "unsupported":
        return parsers.UnsupportedFileType(message)
    if error.get("kind") == "limit":
        return parsers.LimitExceeded(message, str(error.get("setting", "")), error.get("value", 0))
    return parsers.ParseError(message)


class ParsePool:
    """`async with pool.parse(path, fmt, options) as parsed:` then iterate parsed.sections in a worker thread."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self._idle: list[_Child] = []
        self._slots: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def parse(self, path: Path, fmt: str, options: parsers.Options) -> AsyncIterator[parsers.Parsed]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.processes)
        async with self._slots:
            child = self._take_idle()
            if child is None:
                child = await asyncio.to_thread(_Child, self.limits)
            try:
                yield await asyncio.to_thread(child.begin, path, fmt, options)
            finally:
                if child.reusable():
                    self._idle.append(child)
                else:  # dead, grown, or abandoned mid-file (its stream cannot be resynchronised)
                    await asyncio.to_thread(child.kill)

    def _take_idle(self) -> _Child | None:
        while self._idle:
            child = self._idle.pop()
            if child.reusable():  # not killed from outside while it waited
                return child
            child.kill()
        return None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for child in idle:
            await asyncio.to_thread(child.kill)
