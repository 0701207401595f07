"""A reduced run of the vector search benchmark (make bench): every exact candidate finds the exact top 10, the
embedded store among them, filtered and not."""

from __future__ import annotations

import pytest
from vectors import main


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_vectors_bench_reduced():
    (result,) = await main(["--sizes", "5000", "--queries", "20", "--embeddings", "random", "--milvus-queries", "5"])
    assert result["chunks"] == 5000
    names = {name for name, _ in result["latencies"]}
    assert {"numpy brute force", "embedded store", "milvus-lite"} <= names
    for (name, mode), recalls in result["recall"].items():
        if name in ("numpy brute force", "embedded store"):
            assert min(recalls) == 1.0, (name, mode)
    assert result["load_seconds"]["embedded store (reopen + first search)"] > 0
