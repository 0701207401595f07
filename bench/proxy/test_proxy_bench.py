"""A reduced run of bench/proxy/run.py (`make bench`): the proxy's added time to first byte and throughput,
direct vs through a real `typecase serve`, with 1 and 200 concurrent clients, printed as ratios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("proxy_bench_run", Path(__file__).with_name("run.py"))
bench = sys.modules["proxy_bench_run"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.slow
def test_proxy_bench_reduced(capsys):
    rows = bench.main(["--requests", "300", "--mib", "1", "--concurrency", "1,200"])
    out = capsys.readouterr().out
    print(out)
    assert "time to first byte p50" in out and "throughput MiB/s" in out and "x" in out
    one = next(r for r in rows if r.kind == "ttfb" and r.clients == 1)
    assert one.proxy.requests == 300 and one.direct.requests == 300
    added_ms = (bench.pct(one.proxy.ttfb, 50) - bench.pct(one.direct.ttfb, 50)) * 1000
    assert added_ms < 3, out  # target < 1 ms; generous here, since CI machines are shared
    many = next(r for r in rows if r.kind == "ttfb" and r.clients == 200)
    assert many.proxy.requests == 200  # every concurrent stream completed through the proxy
