"""What keeping embedded event logs on disk (embedded_event_logs_durable, infra/journal.py) costs a chat turn:
two `typecase serve` processes (embedded: SQLite, in-process cache), one writing its turns' event logs to
eventlogs.sqlite3 before delivering them, one keeping them in memory only, loaded in alternating rounds (the VM's
speed drifts, so each round of one is compared with the neighbouring rounds of the other).

Each round: N concurrent streaming turns over SSE (as bench_chat.py). Prints p50/p99 time to first token and
inter-token gap, and the server's CPU per delivered token, for both, with the ratio durable / memory.

Run: .venv/bin/python bench/chat/bench_eventlog.py [--turns 50] [--tokens 50] [--delay-ms 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_chat import (
    AUTH,
    Stack,
    cpu_seconds,
    percentile,
    run_load,
    typecase_end,  # noqa: E402
    typecase_token,
)

MODES = {
    "memory": {"TYPECASE_EMBEDDED_EVENT_LOGS_DURABLE": "false"},
    "durable": {"TYPECASE_EMBEDDED_EVENT_LOGS_DURABLE": "true"},
}


async def one_round(stack: Stack, sessions: list[str], question: bytes) -> dict:
    cpu = cpu_seconds(stack.server.pid)
    streams, wall = await run_load(
        stack.http_port,
        [(f"/v1/sessions/{s}:chat", question) for s in sessions],
        {"authorization": AUTH},
        typecase_token,
        typecase_end,
    )
    return {
        "ttft": [(s.arrivals[0] - s.sent) * 1000 for s in streams if s.arrivals],
        "gaps": [(b - a) * 1000 for s in streams for a, b in zip(s.arrivals, s.arrivals[1:])],
        "tokens": sum(len(s.arrivals) for s in streams),
        "cpu": cpu_seconds(stack.server.pid) - cpu,
        "complete": sum(1 for s in streams if s.ended and not s.error),
        "errors": sorted({s.error for s in streams if s.error})[:3],
    }


async def bench(args) -> dict:
    question = json.dumps({"content": "Tell me a story."}).encode()
    results: dict[str, dict[str, list]] = {
        m: {"ttft": [], "gaps": [], "tokens": [], "cpu": [], "complete": [], "errors": []} for m in MODES
    }
    with (
        Stack(args.tokens, args.delay_ms, args.turns, MODES["memory"]) as memory,
        Stack(args.tokens, args.delay_ms, args.turns, MODES["durable"]) as durable,
    ):
        stacks = {"memory": memory, "durable": durable}
        sessions = {m: s.sessions(args.turns * (args.rounds + 1)) for m, s in stacks.items()}
        for m, stack in stacks.items():  # warm-up round, not counted
            await one_round(stack, sessions[m][: args.turns], question)
        for r in range(1, args.rounds + 1):
            order = list(MODES) if r % 2 else list(reversed(MODES))
            for m in order:
                got = await one_round(stacks[m], sessions[m][r * args.turns : (r + 1) * args.turns], question)
                for key, value in got.items():
                    results[m][key] += value if isinstance(value, list) else [value]
        journal = Path(durable.tmp.name) / "eventlogs.sqlite3"
        size = sum(p.stat().st_size for p in journal.parent.glob("eventlogs.sqlite3*"))
    report = {
        m: {
            "ttft_p50": percentile(v["ttft"], 50),
            "ttft_p99": percentile(v["ttft"], 99),
            "gap_p50": percentile(v["gaps"], 50),
            "gap_p99": percentile(v["gaps"], 99),
            "cpu_us_per_token": sum(v["cpu"]) / max(1, sum(v["tokens"])) * 1e6,
            "complete": sum(v["complete"]),
            "errors": v["errors"][:3],
        }
        for m, v in results.items()
    }
    report["journal_bytes"] = size
    report["load_average"] = os.getloadavg()[0]
    return report


def print_report(report: dict, args) -> None:
    m, d = report["memory"], report["durable"]
    print(
        f"\nembedded event logs on disk vs in memory: {args.rounds} alternating rounds of {args.turns} concurrent "
        f"chat turns, {args.tokens} tokens {args.delay_ms:g} ms apart ({os.cpu_count()} CPUs, load average "
        f"{report['load_average']:.1f})"
    )
    print(f"{'':28}{'memory':>10}{'durable':>10}{'ratio':>9}")
    for label, key in (
        ("time to first token p50 ms", "ttft_p50"),
        ("time to first token p99 ms", "ttft_p99"),
        ("inter-token gap p50 ms", "gap_p50"),
        ("inter-token gap p99 ms", "gap_p99"),
        ("server CPU us per token", "cpu_us_per_token"),
    ):
        ratio = d[key] / m[key] if m[key] else float("nan")
        print(f"{label:28}{m[key]:>10.2f}{d[key]:>10.2f}{ratio:>8.2f}x")
    print(f"{'turns complete':28}{m['complete']:>10}{d['complete']:>10}")
    print(f"event log file after the run: {report['journal_bytes'] / 1024 / 1024:.1f} MiB")
    for err in m["errors"] + d["errors"]:
        print("error:", err)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--turns",
        type=int,
        default=50,
        help="concurrent streaming turns per round (200 saturates 2 cores, and then tokens merge into fewer events)",
    )
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream pause between tokens")
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds per mode")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    report = asyncio.run(bench(args))
    print_report(report, args)
    return report


if __name__ == "__main__":
    main()
