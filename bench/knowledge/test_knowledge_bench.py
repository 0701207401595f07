"""A reduced run of the knowledge benchmark (make bench): ingestion keeps up with the embedding model, search
stays within a small factor of a bare vector store query."""

from __future__ import annotations

import statistics

import pytest
from knowledge_bench import main


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_knowledge_bench_reduced():
    out = await main(
        [
            "--corpus-mb",
            "0.3",
            "--corpus-files",
            "2",
            "--small-files",
            "20",
            "--search-chunks",
            "5000",
            "--distinct",
            "200",
            "--queries",
            "30",
            "--ceiling-sample",
            "128",
        ]
    )
    ingest, search = out["ingest"], out["search"]
    assert set(ingest["results"]) == {"corpus", "small files"}
    for result in ingest["results"].values():
        assert result["chunks"] > 0
        # parsing, SQL, Milvus and BM25 cost little beside the model: at least half of its raw throughput
        assert result["rate"] >= 0.5 * result["ceiling"], result
    assert search["chunks"] == 5000
    bare = statistics.median(search["latencies"]["bare vector store"])
    hybrid = statistics.median(search["latencies"]["search hybrid"])
    embed = statistics.median(search["latencies"]["query embedding alone"])
    assert hybrid < 3 * (bare + embed) + 0.05, (hybrid, bare, embed)
