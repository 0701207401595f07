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


@pytest.mark.slow
@pytest.mark.skipif(not (bench.have_wrk() and bench.have_nginx()), reason="wrk and nginx not installed")
def test_proxy_bench_wrk_nginx(capsys):
    """The --client wrk --upstream nginx path, small: nginx answers the bench's POST with upstream.py's SSE body,
    wrk's Lua script sends it (saturated and paced), the probe measures TTFB meanwhile, CPU is split by process."""
    with bench.Processes(upstream="nginx") as p:
        body = bench.httpx.post(f"http://127.0.0.1:{p.upstream_port}/v1/messages", content=bench.REQUEST_BODY)
        assert body.status_code == 200 and body.content == bench.SMALL_BODY
        assert body.headers["content-type"] == "text/event-stream"
        results = bench.asyncio.run(
            bench.measure_wrk(
                p.upstream_server,
                [("1 worker", p.proxy_port, p.server.pid)],
                clients=20,
                seconds=1,
                rounds=1,
                paced_rate=100,
                probe_rate=10,
            )
        )
    out = "\n".join(bench.wrk_report(20, results, "nginx"))
    print(out)
    for mode in ("saturated", "paced"):
        for name in ("direct", "1 worker"):
            run = results[mode][name]
            assert run.requests > 0 and run.errors == 0, (mode, name, out)
            assert run.probe, (mode, name, out)  # the probe got answers during the load
            assert run.cpu["wrk"] > 0 and "upstream child 1" in run.cpu, (mode, name, run.cpu)
        assert "server" in results[mode]["1 worker"].cpu
    assert "1.00x" in out
