"""Where a chat turn's server CPU goes: one `typecase serve` of this tree (bench_chat.Stack), a warm-up round,
then one round of N concurrent turns under cProfile, with the SQL statements it executed counted per text
(bench/chat/profiling/sitecustomize.py, switched on by signals around the round).

Run: .venv/bin/python bench/chat/profile_turns.py [--mode sqlite|postgres] [--turns 100] [--top 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_chat  # noqa: E402
import cpu_per_turn  # noqa: E402


def threads_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds per thread name of a process."""
    out: dict[str, tuple[float, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except FileNotFoundError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")] + (" (main)" if tid == str(pid) else f" {tid}")
        fields = raw.rsplit(")", 1)[1].split()
        user, system = out.get(name, (0.0, 0.0))
        out[name] = (user + int(fields[11]) / tick, system + int(fields[12]) / tick)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sample", action="store_true", help="a CPU-clock sampler instead of cProfile")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tc-profile-")) / "turns.prof"
    env = {
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "profiling"), os.environ.get("PYTHONPATH", "")]),
        "TC_PROFILE_OUT": str(out),
        "TC_PROFILE_SAMPLE": "1" if args.sample else "0",
        **dict(item.split("=", 1) for item in args.env),
    }
    with ExitStack() as stack_of:
        if args.mode == "postgres":
            env.update(stack_of.enter_context(cpu_per_turn.SharedStores()))
        stack = stack_of.enter_context(bench_chat.Stack(args.tokens, 20.0, args.turns, env))
        ids = stack.sessions(args.turns * 2)
        asyncio.run(cpu_per_turn.one_round(stack, ids[: args.turns]))
        stack.server.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        before = threads_cpu(stack.server.pid)
        result = asyncio.run(cpu_per_turn.one_round(stack, ids[args.turns :]))
        after = threads_cpu(stack.server.pid)
        stack.server.send_signal(signal.SIGUSR2)
        time.sleep(1.0)
        log_lines = stack.log_path.read_text(errors="replace").splitlines()
    warnings = [line for line in log_lines if "WARNING" in line or "ERROR" in line]
    print(f"server log: {len(warnings)} warnings or errors", *warnings[:3], *warnings[-3:], sep="\n  ")
    turns = max(1, result["complete"])
    print(f"{result['complete']} turns, CPU {result['cpu_s'] * 1000 / turns:.2f} ms/turn; per thread (user + sys):")
    for name, (user, system) in sorted(after.items(), key=lambda kv: -sum(kv[1])):
        was = before.get(name, (0.0, 0.0))
        used = (user - was[0], system - was[1])
        if sum(used) > 0:
            print(f"  {name:24} {used[0] * 1000 / turns:6.2f} + {used[1] * 1000 / turns:5.2f} ms/turn")
    sql = json.loads(Path(str(out) + ".sql.json").read_text())
    total = sum(n for _, n in sql)
    print(f"SQL statements: {total} ({total / max(1, result['complete']):.2f} per turn)")
    for text, n in sql:
        print(f"{n:>6}  {text}")
    if not args.sample:
        pstats.Stats(str(out)).sort_stats(args.sort).print_stats(args.top)
        return
    samples = json.loads(out.read_text())
    per_turn = 1.0 / max(1, result["complete"])  # one sample per ms of CPU
    for kind in ("inclusive", "self"):
        print(f"\n{kind} (ms of CPU per turn; {samples['total'] * per_turn:.2f} sampled per turn)")
        for name, n in sorted(samples[kind].items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"{n * per_turn:8.3f}  {name}")


if __name__ == "__main__":
    main()
