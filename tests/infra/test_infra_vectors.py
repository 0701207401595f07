"""Contract tests for the vector store: the embedded store and milvus-lite in a temp dir, plus a Milvus server
when TYPECASE_TEST_MILVUS_URI is set."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from typecase.server.infra.vectors import VectorStore, create_vector_store
from typecase.server.infra.vectors_embedded import EmbeddedVectorStore

from .infra_support import MILVUS_URI, run_async, unique

DIM = 8
BACKENDS = ["embedded", "lite"] + (["server"] if MILVUS_URI else [])


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    """One store per module: milvus-lite takes about a second to start. The store is loop-agnostic."""
    vs: VectorStore | EmbeddedVectorStore
    if request.param == "embedded":
        vs = EmbeddedVectorStore(tmp_path_factory.mktemp("embedded") / "sub")
    else:
        uri = MILVUS_URI if request.param == "server" else str(tmp_path_factory.mktemp("milvus") / "sub" / "v.db")
        vs = VectorStore(uri)
    run_async(vs.start())
    yield vs
    run_async(vs.stop())


@pytest.fixture
async def collection(store: VectorStore) -> AsyncIterator[str]:
    name = unique("tc_test")
    await store.ensure_collection(name, DIM)
    try:
        yield name
    finally:
        await store.drop_collection(name)


def unit(i: int) -> list[float]:
    """Basis vector i, slightly tilted towards i+1 so every vector is distinct."""
    v = [0.0] * DIM
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.1
    return v


def rows(n: int, **extra) -> list[dict]:
    return [
        {
            "id": f"doc-{i}",
            "vector": unit(i),
            "metadata": {"n": i, "tag": "even" if i % 2 == 0 else "odd"},
            "kb_id": "kb1" if i < 4 else "kb2",
            **extra,
        }
        for i in range(n)
    ]


async def test_ensure_collection_is_idempotent_and_checks_dimension(store: VectorStore, collection: str) -> None:
    assert await store.has_collection(collection)
    await store.ensure_collection(collection, DIM)  # second call: no error, data kept
    with pytest.raises(ValueError, match="dimension"):
        await store.ensure_collection(collection, DIM * 2)
    assert collection in await store.list_collections()
    with pytest.raises(ValueError):
        await store.ensure_collection("bad-name; drop", DIM)


async def test_upsert_count_and_replace(store: VectorStore, collection: str) -> None:
    assert await store.count(collection) == 0
    assert await store.upsert(collection, rows(8)) == 8
    assert await store.count(collection) == 8  # visible right after the write (Strong consistency)
    await store.upsert(collection, [{"id": "doc-0", "vector": unit(5), "metadata": {"n": 100}, "kb_id": "kb9"}])
    assert await store.count(collection) == 8  # same id replaces, never duplicates
    (row,) = await store.get(collection, ["doc-0"])
    assert row["metadata"] == {"n": 100} and row["kb_id"] == "kb9"
    assert await store.count(collection, filter='kb_id == "kb2"') == 4


async def test_search_returns_nearest_first(store: VectorStore, collection: str) -> None:
    await store.upsert(collection, rows(8))
    results = await store.search(collection, [unit(3), unit(6)], top_k=3)
    assert len(results) == 2
    first, second = results
    assert first[0]["id"] == "doc-3" and second[0]["id"] == "doc-6"
    scores = [h["distance"] for h in first]
    assert scores == sorted(scores, reverse=True)  # COSINE: higher is closer
    assert math.isclose(first[0]["distance"], 1.0, abs_tol=1e-4)
    assert first[0]["metadata"] == {"n": 3, "tag": "odd"} and first[0]["kb_id"] == "kb1"
    assert "vector" not in first[0]  # vectors are not shipped back unless asked for


async def test_search_with_filters_and_output_fields(store: VectorStore, collection: str) -> None:
    await store.upsert(collection, rows(8))
    hits = (await store.search(collection, [unit(1)], top_k=8, filter='kb_id == "kb2"'))[0]
    assert {h["id"] for h in hits} == {"doc-4", "doc-5", "doc-6", "doc-7"}
    hits = (await store.search(collection, [unit(1)], top_k=8, filter='metadata["tag"] == "even"'))[0]
    assert {h["id"] for h in hits} == {"doc-0", "doc-2", "doc-4", "doc-6"}
    hits = (await store.search(collection, [unit(2)], top_k=1, output_fields=["kb_id"]))[0]
    assert hits[0]["id"] == "doc-2" and hits[0]["kb_id"] == "kb1" and "metadata" not in hits[0]


async def test_delete_by_ids_and_filter(store: VectorStore, collection: str) -> None:
    await store.upsert(collection, rows(8))
    await store.delete(collection, ids=["doc-0", "doc-1"])
    assert await store.count(collection) == 6
    await store.delete(collection, filter='kb_id == "kb2"')
    assert await store.count(collection) == 2
    assert {h["id"] for h in (await store.search(collection, [unit(0)], top_k=8))[0]} == {"doc-2", "doc-3"}
    with pytest.raises(ValueError):
        await store.delete(collection)  # neither ids nor filter: refuse rather than guess
    with pytest.raises(ValueError):
        await store.delete(collection, filter="  ")


async def test_batched_upsert_and_concurrent_calls(store: VectorStore, collection: str) -> None:
    many = [{"id": f"r{i}", "vector": unit(i), "n": i} for i in range(1200)]  # more than one batch
    await store.upsert(collection, many)
    assert await store.count(collection) == 1200
    # milvus-lite must be serialised: concurrent calls from many tasks must all succeed.
    results = await asyncio.gather(*(store.search(collection, [unit(i)], top_k=2) for i in range(12)))
    assert all(len(r[0]) == 2 for r in results)


async def test_l2_metric_orders_by_ascending_distance(store: VectorStore) -> None:
    name = unique("tc_l2")
    await store.ensure_collection(name, DIM, metric="L2")
    try:
        await store.upsert(name, rows(8))
        hits = (await store.search(name, [unit(5)], top_k=3))[0]
        assert hits[0]["id"] == "doc-5"
        assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    finally:
        await store.drop_collection(name)


async def test_drop_collection(store: VectorStore) -> None:
    name = unique("tc_drop")
    await store.ensure_collection(name, DIM)
    await store.upsert(name, rows(2))
    await store.drop_collection(name)
    assert not await store.has_collection(name)
    await store.ensure_collection(name, DIM)  # recreated empty
    assert await store.count(name) == 0
    await store.drop_collection(name)


async def test_health(store: VectorStore) -> None:
    ok, detail = await store.health()
    assert ok and "ok" in detail


@pytest.mark.parametrize("kind", ["embedded", "lite"])
async def test_not_started_store_fails_clearly_and_health_is_false(tmp_path: Path, kind: str) -> None:
    vs = EmbeddedVectorStore(tmp_path) if kind == "embedded" else VectorStore(str(tmp_path / "v.db"))
    with pytest.raises(RuntimeError, match="not started"):
        await vs.count("x")
    ok, _ = await vs.health()
    assert not ok


def test_local_path_must_be_a_db_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.db"):
        VectorStore(str(tmp_path / "vectors"))


def test_create_vector_store(tmp_path: Path) -> None:
    embedded = create_vector_store(None, tmp_path)
    assert embedded.name == "vectors/embedded" and embedded.directory == tmp_path.resolve() / "vectors" / "embedded"
    local = create_vector_store(None, tmp_path, embedded="milvus-lite")
    assert local.is_local and local.uri == str(tmp_path.resolve() / "vectors" / "milvus.db")
    with pytest.raises(ValueError, match="milvus-lite"):
        create_vector_store(None, tmp_path, embedded="faiss")
    remote = create_vector_store("http://milvus:19530", tmp_path, token="root:Milvus")
    assert not remote.is_local and remote.name == "vectors/milvus" and "Milvus" not in repr(remote)
