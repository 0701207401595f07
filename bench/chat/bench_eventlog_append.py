"""The event log append that every streamed chat token goes through (infra/eventlog.py), in process: on the
in-memory cache, and on the cache that keeps streams in a SQLite file (infra/journal.py), in alternating rounds.

N concurrent "turns" each append `--tokens` entries of a chat token's size, one every `--delay-ms` (as a turn
relaying an upstream does), and wait for each append to be stored before the next, as the turn runner does
before it delivers the token. Prints the append latency (p50/p99: what a token's delivery waits) and the
process CPU per appended entry for both, with the ratio file / memory. Less sensitive to a busy machine than the
whole-stack bench (bench_eventlog.py), which it complements.

Run: .venv/bin/python bench/chat/bench_eventlog_append.py [--turns 200] [--tokens 50] [--delay-ms 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from typecase.server.infra.cache_memory import MemoryCache
from typecase.server.infra.eventlog import Entry, EventLog
from typecase.server.infra.journal import JournaledMemoryCache

PAYLOAD = (
    b"\x08\x02\x12\x1a01M96M4DKG0QN823MZEP5NFV0T\x1a\x1c\n\x0c\x08\xb2\xe3\xc4\xc2\x06\x10\xe8\xa9\xd1\x03*"
    b"\x0c\n\x05tok12 \x12\x00"
)  # a ChatResponse carrying one token, as serialized


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


async def one_round(log: EventLog, round_no: int, args) -> tuple[list[float], float, int]:
    latencies: list[float] = []

    async def turn(n: int) -> None:
        log_id = f"r{round_no}t{n}"
        for seq in range(1, args.tokens + 1):
            started = time.perf_counter()
            await log.append(log_id, Entry(seq, PAYLOAD, seq == args.tokens))
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(args.delay_ms / 1000)

    cpu = time.process_time()
    await asyncio.gather(*(turn(n) for n in range(args.turns)))
    return latencies, time.process_time() - cpu, args.turns * args.tokens


async def bench(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="tc-eventlog-") as tmp:
        caches = {"memory": MemoryCache(), "file": JournaledMemoryCache(Path(tmp) / "eventlogs.sqlite3")}
        for cache in caches.values():
            await cache.start()
        logs = {
            m: EventLog(c, ttl_seconds=900, running_ttl_seconds=1500, key=lambda i: f"log:{i}")
            for m, c in caches.items()
        }
        results = {m: {"latency": [], "cpu": 0.0, "entries": 0} for m in caches}
        for log in logs.values():  # warm-up
            await one_round(log, 0, args)
        for r in range(1, args.rounds + 1):
            for m in list(logs) if r % 2 else list(reversed(logs)):
                latency, cpu, entries = await one_round(logs[m], r, args)
                results[m]["latency"] += latency
                results[m]["cpu"] += cpu
                results[m]["entries"] += entries
        for cache in caches.values():
            await cache.stop()
    return {
        m: {
            "p50": percentile(v["latency"], 50),
            "p99": percentile(v["latency"], 99),
            "cpu_us": v["cpu"] / v["entries"] * 1e6,
        }
        for m, v in results.items()
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    import uvloop

    report = uvloop.run(bench(args))
    m, f = report["memory"], report["file"]
    print(
        f"\nevent log appends, {args.rounds} alternating rounds of {args.turns} concurrent turns x {args.tokens} "
        f"tokens, {args.delay_ms:g} ms apart ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )
    print(f"{'':30}{'memory':>10}{'file':>10}{'ratio':>9}")
    for label, key in (
        ("append latency p50 ms", "p50"),
        ("append latency p99 ms", "p99"),
        ("process CPU us per entry", "cpu_us"),
    ):
        print(f"{label:30}{m[key]:>10.3f}{f[key]:>10.3f}{f[key] / m[key] if m[key] else float('nan'):>8.2f}x")
    return report


if __name__ == "__main__":
    main()
