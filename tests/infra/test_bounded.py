"""Worker processes for user computations (typecase.server.infra.bounded): real processes, killed at their
deadline, capped in memory, started without the server's environment, and replaced whenever one is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from typecase.server.infra.bounded import DeadlineExceeded, OutOfMemory, WorkerError, WorkerPool

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.infra.bounded_targets:run"
MiB = 1 << 20


@pytest.fixture
async def pool(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the only variable a worker inherits, so it finds tests/
    monkeypatch.setenv("TYPECASE_ADMIN_API_KEY", "a secret the workers must not see")
    made = WorkerPool(TARGET, workers=1, memory_bytes=128 * MiB, max_reply_bytes=64 * 1024)
    yield made
    await made.close()


async def test_a_worker_answers_and_is_reused(pool):
    first = await pool.call({"do": "echo", "value": [1, "二", None]}, timeout=5)
    second = await pool.call({"do": "echo", "value": {"k": 1.5}}, timeout=5)
    assert first["value"] == [1, "二", None] and second["value"] == {"k": 1.5}
    assert first["pid"] == second["pid"]


async def test_an_error_in_the_target_is_reported_and_the_worker_kept(pool):
    before = (await pool.call({"do": "echo", "value": 0}, timeout=5))["pid"]
    with pytest.raises(WorkerError, match="the target refused"):
        await pool.call({"do": "fail"}, timeout=5)
    assert (await pool.call({"do": "echo", "value": 0}, timeout=5))["pid"] == before


@pytest.mark.parametrize(
    "request_", [{"do": "spin"}, {"do": "sleep_in_c", "seconds": 30}], ids=["a Python loop", "a long C call"]
)
async def test_a_computation_past_its_deadline_is_killed_on_time_and_its_worker_replaced(pool, request_):
    before = (await pool.call({"do": "echo", "value": 0}, timeout=5))["pid"]
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await pool.call(request_, timeout=0.5)
    assert time.perf_counter() - started < 1.0
    after = (await pool.call({"do": "echo", "value": 0}, timeout=5))["pid"]
    assert after != before


async def test_memory_is_capped_per_worker(pool):
    assert await pool.call({"do": "allocate", "bytes": 16 * MiB}, timeout=5) == 16 * MiB
    with pytest.raises(OutOfMemory):
        await pool.call({"do": "allocate", "bytes": 256 * MiB}, timeout=5)
    assert await pool.call({"do": "allocate", "bytes": 16 * MiB}, timeout=5) == 16 * MiB  # a fresh worker


async def test_a_worker_sees_none_of_the_servers_environment(pool):
    names = await pool.call({"do": "environment"}, timeout=5)
    assert "TYPECASE_ADMIN_API_KEY" not in names
    # GRPC_ENABLE_FORK_SUPPORT: set by the worker's own import of typecase.server (server/__init__.py), not passed.
    assert set(names) <= {"PATH", "PYTHONPATH", "LC_CTYPE", "GRPC_ENABLE_FORK_SUPPORT"}


async def test_a_reply_over_the_limit_is_refused(pool):
    assert len(await pool.call({"do": "text", "chars": 60_000}, timeout=5)) == 60_000
    with pytest.raises(WorkerError, match="larger than 65536 bytes"):
        await pool.call({"do": "text", "chars": 70_000}, timeout=5)
    assert len(await pool.call({"do": "text", "chars": 10}, timeout=5)) == 10


async def test_a_cancelled_call_frees_its_worker(pool):
    call = asyncio.create_task(pool.call({"do": "spin"}, timeout=60))
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert (await asyncio.wait_for(pool.call({"do": "echo", "value": 1}, timeout=5), 10))["value"] == 1


async def test_calls_queue_for_the_workers_and_waiting_is_not_running(pool):
    started = time.perf_counter()
    results = await asyncio.gather(*(pool.call({"do": "sleep_in_c", "seconds": 0.3}, timeout=0.5) for _ in range(3)))
    assert results == ["slept"] * 3
    assert time.perf_counter() - started >= 0.9  # one worker: one after another, each within its own deadline


async def test_a_worker_that_dies_is_replaced(pool):
    import os
    import signal

    pid = (await pool.call({"do": "echo", "value": 0}, timeout=5))["pid"]
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert (await pool.call({"do": "echo", "value": 0}, timeout=5))["pid"] != pid
