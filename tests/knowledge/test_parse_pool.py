"""The parse processes (knowledge/parse_pool.py) with real child processes: reused between files; a file that
breaks the memory or CPU cap, or whose process is killed, fails alone and the next file gets a fresh process; a
stream abandoned half-way does not leak into the next file; the children see no secrets of the server."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from typecase.server.knowledge import parsers
from typecase.server.knowledge.chunking import Rule, chunk_sections
from typecase.server.knowledge.parse_pool import Limits, ParsePool

from . import files, hostile

MiB = 1024 * 1024
NO_CELL_CAP = parsers.Options(xlsx_max_cells=10**15)


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("docs")
    paths = {
        "small.docx": files.docx_bytes([("h1", "Handbook"), ("p", "Welcome aboard.")]),
        "small.pdf": files.pdf_bytes(["The launch code of project Zephyr is 7391."]),
        "long.txt": files.long_english(400).encode(),
        "padded.xlsx": hostile.padded_xlsx(),
        "hog.json": b"[" + b"[]," * 5_000_000 + b"[]]",  # 15 MB of text, ~400 MB of Python lists
    }
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in paths}


@pytest.fixture
async def make_pool():
    pools: list[ParsePool] = []

    def make(**limits) -> ParsePool:
        pools.append(ParsePool(Limits(**{"processes": 1, **limits})))
        return pools[-1]

    yield make
    for pool in pools:
        await pool.close()


async def text_of(pool: ParsePool, path, fmt: str, options: parsers.Options = parsers.Options()) -> str:
    async with pool.parse(path, fmt, options) as parsed:
        chunks = await asyncio.to_thread(lambda: list(chunk_sections(parsed.sections, Rule())))
    return "\n".join(c.text for c in chunks)


def child_pid(pool: ParsePool) -> int:
    (child,) = pool._idle
    return child.proc.pid


async def test_a_parse_process_is_reused_between_files(make_pool, docs):
    pool = make_pool()
    assert "Welcome aboard." in await text_of(pool, docs["small.docx"], "docx")
    first = child_pid(pool)
    assert "Zephyr is 7391" in await text_of(pool, docs["small.pdf"], "pdf")
    assert child_pid(pool) == first


async def test_a_file_over_the_memory_cap_fails_alone_and_the_next_file_gets_a_fresh_process(make_pool, docs):
    pool = make_pool(memory_bytes=320 * MiB)
    await text_of(pool, docs["small.docx"], "docx")
    first = child_pid(pool)
    with pytest.raises(parsers.LimitExceeded, match="knowledge_parse_memory_bytes") as failure:
        await text_of(pool, docs["hog.json"], "json")
    assert failure.value.setting == "knowledge_parse_memory_bytes"
    assert "Welcome aboard." in await text_of(pool, docs["small.docx"], "docx")
    assert child_pid(pool) != first


async def test_a_file_over_the_cpu_cap_is_stopped_by_the_kernel_and_fails_alone(make_pool, docs):
    pool = make_pool(cpu_seconds=1)
    started = time.monotonic()
    with pytest.raises(parsers.LimitExceeded, match="knowledge_parse_cpu_seconds"):
        await text_of(pool, docs["padded.xlsx"], "xlsx", NO_CELL_CAP)
    assert time.monotonic() - started < 30
    assert "Welcome aboard." in await text_of(pool, docs["small.docx"], "docx")


async def test_a_killed_parse_process_fails_only_the_file_it_was_parsing(make_pool, docs):
    pool = make_pool()
    await text_of(pool, docs["small.docx"], "docx")
    victim = child_pid(pool)
    asyncio.get_running_loop().call_later(0.5, os.kill, victim, signal.SIGKILL)
    with pytest.raises(parsers.LimitExceeded, match="SIGKILL"):
        await text_of(pool, docs["padded.xlsx"], "xlsx", NO_CELL_CAP)
    assert "Zephyr is 7391" in await text_of(pool, docs["small.pdf"], "pdf")
    assert child_pid(pool) != victim


async def test_a_stream_abandoned_half_way_does_not_leak_into_the_next_file(make_pool, docs):
    pool = make_pool()
    options = parsers.Options(block_chars=4096)
    with pytest.raises(RuntimeError):
        async with pool.parse(docs["long.txt"], "txt", options) as parsed:
            await asyncio.to_thread(next, parsed.sections)
            raise RuntimeError("the job was cancelled")
    assert not pool._idle  # its process was in the middle of a file: killed, not reused
    assert "Zephyr is 7391" in await text_of(pool, docs["small.pdf"], "pdf")


async def test_a_failed_file_leaves_its_process_reusable(make_pool, docs, tmp_path):
    pool = make_pool()
    await text_of(pool, docs["small.docx"], "docx")
    first = child_pid(pool)
    (tmp_path / "laughs.docx").write_bytes(hostile.entity_docx())
    with pytest.raises(parsers.ParseError, match="DTD"):
        await text_of(pool, tmp_path / "laughs.docx", "docx")
    with pytest.raises(parsers.UnsupportedFileType):
        await text_of(pool, docs["small.pdf"], "docx")
    assert child_pid(pool) == first


async def test_parse_processes_see_none_of_the_servers_secrets(make_pool, docs, monkeypatch):
    monkeypatch.setenv("TYPECASE_DATABASE_URL", "postgresql://user:hunter2@db/typecase")
    pool = make_pool()
    await text_of(pool, docs["small.docx"], "docx")
    with open(f"/proc/{child_pid(pool)}/environ", "rb") as f:
        environment = f.read()
    assert b"hunter2" not in environment and b"TYPECASE_" not in environment


async def test_at_most_the_configured_number_of_files_parse_at_once(make_pool, docs):
    pool = make_pool(processes=2)
    running = peak = 0

    async def one() -> None:
        nonlocal running, peak
        async with pool.parse(docs["small.docx"], "docx", parsers.Options()) as parsed:
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            await asyncio.to_thread(list, parsed.sections)
            running -= 1

    await asyncio.gather(*(one() for _ in range(6)))
    assert peak == 2 and len(pool._idle) == 2


@pytest.mark.parametrize(("recycle_rss_bytes", "kept"), [(128 * MiB, 1), (1, 0)])
async def test_a_parse_process_grown_past_the_recycle_size_is_replaced(make_pool, docs, recycle_rss_bytes, kept):
    pool = make_pool(recycle_rss_bytes=recycle_rss_bytes)
    assert "Welcome aboard." in await text_of(pool, docs["small.docx"], "docx")  # leaves the process at ~40 MiB
    assert len(pool._idle) == kept
