"""Server CPU per chat turn: today's code against a baseline commit, interleaved in one run.

Two `typecase serve` processes run side by side, each with its own paced fake upstream (bench/llm/upstream.py):
one from this working tree, one from the baseline commit (default ed12149, main before the lean-turn work). Rounds
alternate baseline, current, baseline, current, ... (the VM's speed drifts, so neither side gets the better
minutes), each round N concurrent streaming turns of `--tokens` tokens over SSE, one new session per turn. The CPU
of each server's process tree (user + sys from /proc/<pid>/stat, children included) is read before a round and
again once the round's streams ended and the server went quiet, so the turn's end writes are counted; divided by
turns and by the answers' tokens. Prints both sides' CPU per turn and per token and the ratio current / baseline.

How the baseline is obtained: `git archive <commit> server` is unpacked into a temporary folder, and the baseline
server runs with PYTHONPATH pointing at a folder whose typecase/server links to it, so that `typecase.server`
(a namespace portion, found before the editable install of this tree) resolves to the baseline's server/, while
the installed typecase.v1 (gen/, unchanged by this work) serves both. The bench checks which server/ each process
imported. When the baseline's pyproject.toml does not list hiredis, that folder also holds a `hiredis` module that
fails to import, so redis-py falls back to its Python parser there as it did with the baseline's dependencies.

Modes: `--mode sqlite` (the embedded default: SQLite, in-memory cache and bus) and `--mode postgres` (PostgreSQL at
127.0.0.1:5432 and Redis at 127.0.0.1:6379, a fresh database per server and a free Redis database of 8-15 each, one
worker each), or `--mode both`.

Run: .venv/bin/python bench/chat/cpu_per_turn.py [--mode both] [--rounds 3] [--turns 100] [--tokens 20]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_chat  # noqa: E402

ROOT = bench_chat.ROOT
PG_ADMIN = os.environ.get("TYPECASE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TYPECASE_BENCH_REDIS", "redis://127.0.0.1:6379")


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += bench_chat.cpu_seconds(p)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def baseline_tree(commit: str, into: Path) -> Path:
    """A PYTHONPATH entry under which typecase.server is the baseline commit's server/ folder."""
    src = into / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "server"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    pkg = into / "pkg" / "typecase"
    pkg.mkdir(parents=True)
    (pkg / "server").symlink_to(src / "server")
    project = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:pyproject.toml"], check=True, capture_output=True, text=True
    ).stdout
    if "hiredis" not in project:  # redis-py uses it when it is installed: the baseline runs with its own deps
        (into / "pkg" / "hiredis.py").write_text('raise ImportError("hiredis: not a dependency of the baseline")\n')
    return into / "pkg"


def imported_from(pythonpath: str | None) -> str:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", "import typecase.server as s; print(s.__file__)"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(Path(out.stdout.strip()).resolve().parent)


def _pg(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class SharedStores:
    """A fresh PostgreSQL database and an emptied Redis database for one server. The Redis database is one of
    8-15 (not 12) that no other bench process holds (a lock file per database): two benches running at once on this
    machine would otherwise empty each other's event logs mid-round."""

    def __init__(self):
        self.name = f"tc_cpu_bench_{uuid.uuid4().hex[:10]}"
        self.lock: int | None = None

    def _claim_redis_db(self) -> int:
        for db in (15, 14, 13, 11, 10, 9, 8):  # 12 is bench/proxy's
            fd = os.open(f"{tempfile.gettempdir()}/typecase-bench-redis-{db}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.lock = fd
            return db
        raise RuntimeError("Redis databases 8-15 (not 12) are all held by other bench runs")

    def __enter__(self) -> dict[str, str]:
        import redis

        self.redis_url = f"{REDIS}/{self._claim_redis_db()}"
        redis.Redis.from_url(self.redis_url).flushdb()
        _pg(f'CREATE DATABASE "{self.name}"')
        host = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
        return {
            "TYPECASE_DATABASE_URL": f"postgresql+asyncpg://{host}/{self.name}",
            "TYPECASE_REDIS_URL": self.redis_url,
            "TYPECASE_WORKERS": "1",
        }

    def __exit__(self, *exc) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()
        _pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self.lock is not None:
            os.close(self.lock)  # releases the database's lock


async def settle(pid: int, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """Wait until the server used under 5% of a core over `quiet_s` (its turns' end writes are done)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = tree_cpu(pid)
        await asyncio.sleep(quiet_s)
        if tree_cpu(pid) - before < 0.05 * quiet_s:
            return


async def one_round(stack: bench_chat.Stack, session_ids: list[str]) -> dict:
    question = json.dumps({"content": "Tell me a story."}).encode()
    auth = {"authorization": bench_chat.AUTH}
    await settle(stack.server.pid)
    before = tree_cpu(stack.server.pid)
    streams, wall = await bench_chat.run_load(
        stack.http_port,
        [(f"/v1/sessions/{s}:chat", question) for s in session_ids],
        auth,
        bench_chat.typecase_token,
        bench_chat.typecase_end,
    )
    await settle(stack.server.pid)
    summary = bench_chat.summarize(streams, wall)
    summary["cpu_s"] = tree_cpu(stack.server.pid) - before
    return summary


def run_mode(mode: str, args, baseline_path: str) -> dict:
    sides = {"baseline": baseline_path, "current": None}
    with ExitStack() as stack_of:
        stacks = {}
        for name, pythonpath in sides.items():
            env = {"TYPECASE_LOG_LEVEL": "WARNING"}
            if pythonpath:
                env["PYTHONPATH"] = pythonpath
            else:
                env.update(item.split("=", 1) for item in args.env)
            if mode == "postgres":
                env.update(stack_of.enter_context(SharedStores()))
            stacks[name] = stack_of.enter_context(bench_chat.Stack(args.tokens, args.delay_ms, args.turns, env))
        ids = {name: s.sessions(args.turns * (args.rounds + 1)) for name, s in stacks.items()}
        return asyncio.run(measure(stacks, ids, args))


async def measure(stacks: dict[str, bench_chat.Stack], ids: dict[str, list[str]], args) -> dict:
    results: dict[str, list[dict]] = {name: [] for name in stacks}
    n = args.turns
    for name, s in stacks.items():  # a warm-up round each (connection pools, code paths, model snapshot)
        await one_round(s, ids[name][:n])
    for r in range(args.rounds):
        for name, s in stacks.items():
            results[name].append(await one_round(s, ids[name][n * (r + 1) : n * (r + 2)]))
    return results


def report(mode: str, results: dict, args) -> dict:
    out = {}
    for name, rounds in results.items():
        turns = sum(r["complete"] for r in rounds)
        tokens = sum(r["tokens"] for r in rounds)
        cpu = sum(r["cpu_s"] for r in rounds)
        out[name] = {
            "turns": turns,
            "tokens": tokens,
            "cpu_s": cpu,
            "ms_per_turn": cpu / max(1, turns) * 1000,
            "us_per_token": cpu / max(1, turns * args.tokens) * 1e6,  # per token of the answer
            "rounds_ms_per_turn": [r["cpu_s"] / max(1, r["complete"]) * 1000 for r in rounds],
            "ttft_p50": sorted(r["ttft_p50"] for r in rounds)[len(rounds) // 2],
            "errors": sorted({e for r in rounds for e in r["errors"]})[:3],
        }
    b, c = out["baseline"], out["current"]
    out["ratio"] = c["ms_per_turn"] / b["ms_per_turn"] if b["ms_per_turn"] else float("nan")
    print(
        f"\nserver CPU per chat turn, {mode}: {args.rounds} rounds each (interleaved), {args.turns} concurrent "
        f"turns of {args.tokens} tokens {args.delay_ms:g} ms apart per round; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'':12}{'turns':>7}{'CPU ms/turn':>13}{'us/token':>10}{'TTFT p50 ms':>13}   per round (ms/turn)")
    for name in ("baseline", "current"):
        s = out[name]
        rounds = " ".join(f"{x:.1f}" for x in s["rounds_ms_per_turn"])
        print(
            f"{name:12}{s['turns']:>7}{s['ms_per_turn']:>13.2f}{s['us_per_token']:>10.0f}{s['ttft_p50']:>13.1f}"
            f"   {rounds}"
        )
        for err in s["errors"]:
            print("  error:", err)
    print(f"ratio current / baseline, CPU per turn: {out['ratio']:.2f}x")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--baseline", default="ed12149", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per side")
    parser.add_argument("--turns", type=int, default=100, help="concurrent streaming turns per round")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the current server only (e.g. TYPECASE_GC_GEN0_THRESHOLD=0)",
    )
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream pause between tokens")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = {}
    with tempfile.TemporaryDirectory(prefix="tc-baseline-") as tmp:
        baseline = str(baseline_tree(args.baseline, Path(tmp)))
        where = {"baseline": imported_from(baseline), "current": imported_from(None)}
        if where["baseline"] == where["current"] or not where["baseline"].startswith(tmp):
            raise SystemExit(f"the baseline server would not be imported from {tmp}: {where}")
        print(f"baseline {args.baseline}: typecase.server from {where['baseline']}; current: {where['current']}")
        for mode in ["sqlite", "postgres"] if args.mode == "both" else [args.mode]:
            results[mode] = report(mode, run_mode(mode, args, baseline), args)
    return results


if __name__ == "__main__":
    main()
