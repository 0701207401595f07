"""Load run: N concurrent SSE chat streams against the production topology for a fixed time.

The cluster rig of tests/cluster (two `typecase serve` replicas and a worker on PostgreSQL, Redis, S3 and a Milvus
server) answers with a paced fake upstream (bench/llm/upstream.py) as its chat model. N virtual users each own a
session and ask one question after another for `--seconds`; each user talks to one replica (client-side round
robin, what an L4 balancer does), reading Server-Sent Events with a raw asyncio client. Users start spread over
`--ramp-seconds`, as real traffic does, not all in one instant.

Prints throughput, p50/p99 time to first token and inter-token gap, failed or incomplete streams (target: zero),
every process's peak RSS, and writes a PNG of latency over time. Before the timed run, the same load is sent
straight to the upstream for a baseline.

Run: .venv/bin/python bench/load/load_run.py [--streams 1000] [--seconds 60] [--tokens 20] [--delay-ms 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench/chat")]

import bench_chat  # noqa: E402
from bench_chat import direct_end, direct_token, percentile, proc_status, typecase_end, typecase_token  # noqa: E402

from tests.cluster.api import call, register_model, set_defaults  # noqa: E402
from tests.cluster.rig import AUTH, Cluster, port_open, wait_for  # noqa: E402
from tests.conftest import free_port  # noqa: E402

OUT = ROOT / "bench/out"


@dataclass
class Turn:
    user: int
    start: float  # seconds since the run began
    ttft_ms: float | None
    gaps_ms: list[float]
    tokens: int
    error: str


@dataclass
class Load:
    turns: list[Turn] = field(default_factory=list)


async def user(
    index: int,
    port: int,
    path: str,
    body: bytes,
    headers: dict,
    is_token,
    is_end,
    t0: float,
    start_at: float,
    stop_at: float,
    load: Load,
) -> None:
    await asyncio.sleep(max(0.0, start_at - (time.perf_counter() - t0)))
    while time.perf_counter() - t0 < stop_at:
        stream = await bench_chat.sse_stream(port, path, body, headers, is_token, is_end)
        arrivals = stream.arrivals
        load.turns.append(
            Turn(
                user=index,
                start=stream.sent - t0,
                ttft_ms=(arrivals[0] - stream.sent) * 1000 if arrivals else None,
                gaps_ms=[(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])],
                tokens=len(arrivals),
                error=stream.error or ("" if stream.ended else "no end event"),
            )
        )


async def run(
    targets: list[tuple[int, str, bytes]], headers: dict, is_token, is_end, seconds: float, ramp: float
) -> Load:
    load = Load()
    t0 = time.perf_counter()
    await asyncio.gather(
        *[
            user(i, port, path, body, headers, is_token, is_end, t0, ramp * i / len(targets), seconds, load)
            for i, (port, path, body) in enumerate(targets)
        ]
    )
    return load


def summarize(load: Load, tokens: int, seconds: float) -> dict:
    done = [t for t in load.turns if not t.error and t.tokens == tokens]
    ttft = [t.ttft_ms for t in done if t.ttft_ms is not None]
    gaps = [g for t in done for g in t.gaps_ms]
    return {
        "turns": len(load.turns),
        "complete": len(done),
        "failed": [t for t in load.turns if t.error or t.tokens != tokens],
        "turns_per_s": len(done) / seconds,
        "tokens_per_s": sum(t.tokens for t in done) / seconds,
        "ttft_p50": percentile(ttft, 50),
        "ttft_p99": percentile(ttft, 99),
        "gap_p50": percentile(gaps, 50),
        "gap_p99": percentile(gaps, 99),
    }


def plot(load: Load, baseline: Load, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for data, label, color in ((baseline, "direct to upstream", "tab:gray"), (load, "through Typecase", "tab:blue")):
        points = [(t.start, t.ttft_ms) for t in data.turns if t.ttft_ms is not None]
        top.scatter([p[0] for p in points], [p[1] for p in points], s=2, alpha=0.35, color=color, label=label)
        per_second: dict[int, list[float]] = {}
        for t in data.turns:
            for g in t.gaps_ms:
                per_second.setdefault(int(t.start), []).append(g)
        seconds = sorted(per_second)
        bottom.plot(seconds, [percentile(per_second[s], 50) for s in seconds], color=color, label=f"{label} p50")
        bottom.plot(
            seconds, [percentile(per_second[s], 99) for s in seconds], color=color, linestyle="--", label=f"{label} p99"
        )
    top.set_ylabel("time to first token (ms)")
    top.set_yscale("log")
    top.legend(loc="upper right", markerscale=5)
    top.set_title(
        f"{args.streams} concurrent SSE chat streams, 2 replicas + worker, {args.tokens} tokens "
        f"{args.delay_ms:g} ms apart"
    )
    bottom.set_ylabel("inter-token gap (ms)")
    bottom.set_xlabel("seconds into the run (turn start)")
    bottom.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def peak_rss(processes: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in processes.items():
        try:
            out[name] = proc_status(pid)["VmHWM"] / 1024
        except (FileNotFoundError, KeyError):
            out[name] = float("nan")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams (virtual users)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long users keep asking")
    parser.add_argument("--ramp-seconds", type=float, default=10.0, help="users start spread over this long")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    parser.add_argument("--delay-ms", type=float, default=500.0, help="upstream pause between tokens")
    parser.add_argument("--png", type=Path, default=OUT / "load.png")
    args = parser.parse_args(argv)

    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/llm/upstream.py"), str(upstream_port), str(args.tokens), str(args.delay_ms)]
    )
    base_dir = Path(tempfile.mkdtemp(prefix="tc-load-"))
    cluster = Cluster(
        base_dir,
        env={
            "TYPECASE_LOG_LEVEL": "WARNING",
            "TYPECASE_RATE_LIMIT_PER_KEY": "100000000/minute",
            "TYPECASE_RATE_LIMIT_PER_USER": "100000000/minute",
            "TYPECASE_LLM_MAX_KEEPALIVE_CONNECTIONS": str(args.streams),
            "TYPECASE_DATABASE_POOL_SIZE": "20",
            # The defaults, not the fault tests' short leases: renewing 500 turns a second is not what production does.
            "TYPECASE_CHAT_TURN_LEASE_SECONDS": "20",
            "TYPECASE_CHAT_REAP_INTERVAL_SECONDS": "15",
        },
    )
    try:
        wait_for(lambda: port_open(upstream_port), 20, "upstream", upstream)
        cluster.start()
        model = register_model(cluster.replica_url(0), f"http://127.0.0.1:{upstream_port}/v1", "load-model")
        set_defaults(cluster.replica_url(0), chat_model_id=model["id"], title_model_id=model["id"])
        with httpx.Client(headers=AUTH, timeout=60) as client:
            sessions = [
                client.post(f"{cluster.url}/v1/sessions", json={"title": f"load {i}"}).json()["session"]["id"]
                for i in range(args.streams)
            ]
        question = json.dumps({"content": "Tell me a story."}).encode()
        direct = json.dumps(
            {
                "model": "bench",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
                "stream_options": {"include_usage": True},
            }
        ).encode()
        ports = [r.http_port for r in cluster.replicas]
        auth = {"authorization": AUTH["authorization"]}

        baseline_seconds = min(20.0, args.seconds)
        print(f"baseline: {args.streams} streams straight to the upstream for {baseline_seconds:g} s ...", flush=True)
        baseline = asyncio.run(
            run(
                [(upstream_port, "/v1/chat/completions", direct)] * args.streams,
                {},
                direct_token,
                direct_end,
                baseline_seconds,
                args.ramp_seconds,
            )
        )
        print(f"load: {args.streams} streams through two replicas for {args.seconds:g} s ...", flush=True)
        load = asyncio.run(
            run(
                [(ports[i % len(ports)], f"/v1/sessions/{s}:chat", question) for i, s in enumerate(sessions)],
                auth,
                typecase_token,
                typecase_end,
                args.seconds,
                args.ramp_seconds,
            )
        )
        processes = {f"replica {i}": r.proc.pid for i, r in enumerate(cluster.replicas)}
        processes.update(
            {
                "worker": cluster.worker.proc.pid,
                "milvus": cluster.milvus.proc.pid,
                "redis": cluster.redis.proc.pid,
                "upstream": upstream.pid,
                "load client": os.getpid(),
            }
        )
        report = {
            "direct": summarize(baseline, args.tokens, baseline_seconds),
            "typecase": summarize(load, args.tokens, args.seconds),
            "rss": peak_rss(processes),
        }
        report["stored_ok"], report["stored_checked"] = check_stored(cluster.url, sessions, load, args.tokens)
        plot(load, baseline, args, args.png)
        print_report(report, args)
        return report
    finally:
        cluster.stop()
        upstream.terminate()
        upstream.wait(10)


def check_stored(base: str, sessions: list[str], load: Load, tokens: int) -> tuple[int, int]:
    """Every turn a sample of users asked is stored, each answer whole: nothing lost or cut short."""
    expected = "".join(f"tok{i} " for i in range(tokens))
    asked: dict[int, int] = {}
    for turn in load.turns:
        asked[turn.user] = asked.get(turn.user, 0) + 1
    ok = checked = 0
    for index in random.Random(7).sample(range(len(sessions)), min(50, len(sessions))):
        answers = [
            m
            for m in call(base, "GET", f"/v1/sessions/{sessions[index]}/messages", page_size=500)["messages"]
            if m["category"] == "MESSAGE_CATEGORY_ANSWER"
        ]
        checked += 1
        ok += len(answers) == asked.get(index, 0) and all(
            m["content"] == expected and m["status"] == "MESSAGE_STATUS_COMPLETE" for m in answers
        )
    return ok, checked


def print_report(report: dict, args) -> None:
    d, t = report["direct"], report["typecase"]
    print(
        f"\nload run: {args.streams} concurrent SSE chat streams for {args.seconds:g} s, {args.tokens} tokens "
        f"{args.delay_ms:g} ms apart; two replicas + worker on PostgreSQL, Redis, S3 (moto), Milvus (milvus-lite "
        f"server); {os.cpu_count()} CPUs shared by every process"
    )
    print(f"{'':30}{'direct':>12}{'typecase':>12}{'ratio':>9}")
    for label, key in (
        ("turns/s completed", "turns_per_s"),
        ("tokens/s delivered", "tokens_per_s"),
        ("time to first token p50 (ms)", "ttft_p50"),
        ("time to first token p99 (ms)", "ttft_p99"),
        ("inter-token gap p50 (ms)", "gap_p50"),
        ("inter-token gap p99 (ms)", "gap_p99"),
    ):
        ratio = t[key] / d[key] if d[key] else float("nan")
        print(f"{label:30}{d[key]:>12.1f}{t[key]:>12.1f}{ratio:>8.2f}x")
    print(f"{'turns started':30}{d['turns']:>12}{t['turns']:>12}")
    print(f"{'failed or incomplete streams':30}{len(d['failed']):>12}{len(t['failed']):>12}")
    print("peak RSS (MiB): " + ", ".join(f"{name} {mib:.0f}" for name, mib in report["rss"].items()))
    print(f"stored answers of {report['stored_checked']} sampled users: {report['stored_ok']} whole and complete")
    for turn in t["failed"][:5]:
        print(f"failed: user {turn.user} at {turn.start:.1f}s, {turn.tokens} tokens: {turn.error}")
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
