"""Smoke run of the gateway benchmark (small counts); ``make bench`` runs the slow tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.mark.slow
def test_gateway_bench_quick(tmp_path):
    import run

    results = run.main(["--quick", "--out", str(tmp_path / "gateway.png")])
    assert (tmp_path / "gateway.png").stat().st_size > 0
    bare, inproc = results["bare starlette"], results["gateway in-process"]
    for metric, value in inproc.items():
        assert value > 0, metric
    # loose bounds (quick counts are noisy); the full run prints the real ratios
    assert inproc["unary p50 us"] < 3 * bare["unary p50 us"]
    ndjson = next(m for m in inproc if m.startswith("ndjson stream x1"))
    assert inproc[ndjson] > 0.3 * bare[ndjson]
