"""The embedded vector store beyond the shared contract (tests/infra/test_infra_vectors.py): exact results against
numpy, persistence, a writer killed mid-write, compaction, one process at a time, filters it refuses."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from typecase.server.infra.vectors_embedded import EmbeddedVectorStore

DIM = 16


def vector_of(row_id: str) -> list[float]:
    """A deterministic unit vector per id, so a reader can check every stored row after a crash."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big"))
    v = rng.standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def rows(n: int, files: int = 10, start: int = 0) -> list[dict]:
    return [
        {
            "id": f"f{i % files}-{i}",
            "vector": vector_of(f"f{i % files}-{i}"),
            "file_id": f"f{i % files}",
            "chunk_index": i,
        }
        for i in range(start, start + n)
    ]


async def opened(path: Path, **kw) -> EmbeddedVectorStore:
    store = EmbeddedVectorStore(path, **kw)
    await store.start()
    return store


async def test_search_is_exact_against_numpy_with_and_without_a_file_filter(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        await store.ensure_collection("c", DIM)
        data = rows(3000)
        await store.upsert("c", data)
        matrix = np.array([r["vector"] for r in data], np.float32)
        rng = np.random.default_rng(7)
        for _ in range(5):
            q = rng.standard_normal(DIM).astype(np.float32)
            q /= np.linalg.norm(q)
            expected = [data[i]["id"] for i in np.argsort(-(matrix @ q))[:10]]
            (hits,) = await store.search("c", [q.tolist()], top_k=10)
            assert [h["id"] for h in hits] == expected
            allowed = [i for i, r in enumerate(data) if r["file_id"] in ("f2", "f7")]
            sub = matrix[allowed] @ q
            expected = [data[allowed[i]]["id"] for i in np.argsort(-sub)[:10]]
            (hits,) = await store.search("c", [q.tolist()], top_k=10, filter='file_id in ["f2", "f7"]')
            assert [h["id"] for h in hits] == expected
            assert np.allclose([h["distance"] for h in hits], np.sort(sub)[::-1][:10], atol=1e-5)
    finally:
        await store.stop()


async def test_rows_deletes_and_replacements_survive_a_restart(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.ensure_collection("c", DIM)
    await store.upsert("c", rows(500))
    await store.delete("c", filter='file_id == "f3"')
    await store.upsert("c", [{"id": "f1-1", "vector": vector_of("moved"), "file_id": "f9", "chunk_index": -1}])
    before = await store.search("c", [vector_of("f5-5")], top_k=20)
    await store.stop()

    store = await opened(tmp_path)
    try:
        assert await store.has_collection("c")
        assert await store.count("c") == 450
        assert await store.count("c", filter='file_id == "f3"') == 0
        assert await store.search("c", [vector_of("f5-5")], top_k=20) == before
        (row,) = await store.get("c", ["f1-1"], output_fields=["file_id", "vector"])
        assert row["file_id"] == "f9" and np.allclose(row["vector"], vector_of("moved"), atol=1e-6)
        with pytest.raises(ValueError, match="dimension"):
            await store.ensure_collection("c", DIM + 1)
    finally:
        await store.stop()


WRITER = textwrap.dedent("""
    import asyncio, sys
    sys.path[:0] = {paths!r}
    from test_vector_store_embedded import opened, rows

    async def main():
        store = await opened({directory!r})
        await store.ensure_collection("c", 16)
        start = 0
        while True:
            await store.upsert("c", rows(200, start=start))
            await store.delete("c", ids=[f"f{{start % 10}}-{{start}}"])
            start += 200
            print(start, flush=True)

    asyncio.run(main())
""")


async def test_a_writer_killed_mid_write_leaves_a_consistent_store(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    script = WRITER.format(paths=[str(Path(__file__).parent)] + sys.path, directory=str(directory))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(8):  # let it write a few batches, then kill it wherever it is
            assert proc.stdout is not None and proc.stdout.readline()
        time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = await opened(directory)
    try:
        n = await store.count("c")
        ids = [f"f{i % 10}-{i}" for i in range(n + 400)]
        stored = await store.get("c", ids, output_fields=["vector", "chunk_index"])
        assert len(stored) == n
        batches = max(r["chunk_index"] for r in stored) // 200 + 1  # upserts committed; the deletes may lag one
        written = {f"f{i % 10}-{i}" for i in range(batches * 200)}
        deleted = [f"f{s % 10}-{s}" for s in range(0, batches * 200, 200)]
        assert batches >= 8 and {r["id"] for r in stored} in (written - set(deleted), written - set(deleted[:-1]))
        for row in stored:  # every committed row has exactly its own vector: no torn or shifted rows
            assert np.allclose(row["vector"], vector_of(row["id"]), atol=1e-6)
        (hit,) = (await store.search("c", [stored[-1]["vector"]], top_k=1))[0]
        assert hit["id"] == stored[-1]["id"]
        await store.upsert("c", rows(10, start=10**6))  # appends over whatever the killed write left
        assert await store.count("c") == n + 10
    finally:
        await store.stop()


async def test_deleted_rows_are_compacted_away_and_search_stays_right(tmp_path: Path) -> None:
    store = await opened(tmp_path, compact_dead_ratio=0.5, compact_min_dead_rows=100)
    await store.ensure_collection("c", DIM)
    await store.upsert("c", rows(1000))
    assert (tmp_path / "c.1.f32").stat().st_size == 1000 * DIM * 4
    await store.delete("c", filter='file_id in ["f0", "f1", "f2", "f3", "f4", "f5"]')  # 600 dead of 1000
    assert not (tmp_path / "c.1.f32").exists()
    assert (tmp_path / "c.2.f32").stat().st_size == 400 * DIM * 4
    (hit,) = (await store.search("c", [vector_of("f8-18")], top_k=1))[0]
    assert hit["id"] == "f8-18" and hit["chunk_index"] == 18
    await store.upsert("c", rows(5, start=5000))
    await store.stop()
    (tmp_path / "c.1.f32").write_bytes(b"\0" * 64)  # a leftover of a compaction interrupted before its commit
    store = await opened(tmp_path)
    try:
        assert not (tmp_path / "c.1.f32").exists()
        assert await store.count("c") == 405
        (hit,) = (await store.search("c", [vector_of("f9-19")], top_k=1, filter='file_id == "f9"'))[0]
        assert hit["id"] == "f9-19"
    finally:
        await store.stop()


async def test_a_second_process_cannot_open_the_same_store(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="TYPECASE_MILVUS_URI"):
            await opened(tmp_path)
    finally:
        await store.stop()
    again = await opened(tmp_path)  # released on stop
    await again.stop()


@pytest.mark.parametrize(
    "expr",
    [
        "file_id",
        "__import__('os')",
        "file_id == other_field",
        "file_id in 'abc'",
        'file_id like "a%"',
        "len(file_id) > 2",
        "file_id ==",
    ],
)
async def test_filters_outside_the_supported_subset_are_refused(tmp_path: Path, expr: str) -> None:
    store = await opened(tmp_path)
    try:
        await store.ensure_collection("c", DIM)
        await store.upsert("c", rows(10))
        with pytest.raises(ValueError):
            await store.search("c", [vector_of("x")], top_k=3, filter=expr)
    finally:
        await store.stop()


async def test_filter_semantics_follow_milvus(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        await store.ensure_collection("c", DIM)
        await store.upsert("c", rows(20) + [{"id": "bare", "vector": vector_of("bare")}])
        assert await store.count("c", filter='file_id != "f1"') == 18  # the row without file_id matches neither
        assert await store.count("c", filter='not (file_id == "f1")') == 19
        assert await store.count("c", filter='file_id not in ["f1", "f2"]') == 16
        assert await store.count("c", filter='chunk_index >= 15 and file_id in ["f5", "f6"]') == 2
        assert await store.count("c", filter='chunk_index < 2 || id == "bare"') == 3
        with pytest.raises(ValueError, match="top_k"):
            await store.search("c", [vector_of("x")], top_k=0)
        with pytest.raises(ValueError, match="dimension"):
            await store.upsert("c", [{"id": "short", "vector": [1.0, 2.0]}])
        with pytest.raises(ValueError, match="dimension"):  # two half-length queries are not one query
            await store.search("c", [[1.0] * (DIM // 2), [0.0] * (DIM // 2)], top_k=3)
    finally:
        await store.stop()


async def test_a_search_over_a_large_collection_leaves_the_event_loop_free(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        await store.ensure_collection("big", 384)
        matrix = np.random.default_rng(1).standard_normal((100_000, 384)).astype(np.float32)
        for start in range(0, len(matrix), 20_000):
            await store.upsert(
                "big",
                [{"id": str(i), "vector": matrix[i], "file_id": f"f{i // 1000}"} for i in range(start, start + 20_000)],
            )
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        task = asyncio.create_task(ticker())
        await store.search("big", matrix[:8].tolist(), top_k=10)
        task.cancel()
        assert ticks > 10  # the loop kept running other tasks while the product ran in a thread
    finally:
        await store.stop()
