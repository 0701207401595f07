"""Where a streamed request's time goes inside `typecase serve`: cProfile over N sequential requests per surface.

relay.py tells how much Typecase adds to the time to first token; this tells which steps it is spent in. It starts
the same stack as relay.py (fake upstream, embedded `typecase serve`), with the server run under a small wrapper
that turns a cProfile on (SIGUSR1) and off with a dump (SIGUSR2), so start-up and warm-up stay out of the profile.
The upstream streams one token by default: a whole request is then its path to the first token plus the finish,
which is what the added TTFT is made of. For each surface it prints the functions with the most own time and the
most cumulative time, in microseconds per request (cProfile's own overhead inflates every number about 2x; read
them as shares and a ranking, not as latencies).

    .venv/bin/python bench/llm/profile_ttft.py [--surfaces grpc,sse,websocket,openai] [--requests 300] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.llm import relay  # noqa: E402


def serve_profiled() -> None:
    """The server side: `typecase serve` with SIGUSR1 starting a profile and SIGUSR2 writing it to $PROFILE_OUT."""
    profiler = cProfile.Profile()

    def start(*_):
        profiler.enable()

    def stop(*_):
        profiler.disable()
        profiler.dump_stats(os.environ["PROFILE_OUT"])
        profiler.clear()
        Path(os.environ["PROFILE_OUT"] + ".done").touch()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from typecase.server.cli import main

    sys.argv = ["typecase", "serve"]
    main()


class ProfiledStack(relay.Stack):
    def __init__(self, tokens: int, out: str):
        super().__init__(tokens, {"PROFILE_OUT": out})
        self.out = out

    def _start(self) -> None:
        original = relay.subprocess.Popen

        def popen(args, **kwargs):  # the server only: the wrapper instead of `-m typecase.server serve`
            if args[1:] == ["-m", "typecase.server", "serve"]:
                args = [args[0], __file__, "--serve"]
            return original(args, **kwargs)

        relay.subprocess.Popen = popen
        try:
            super()._start()
        finally:
            relay.subprocess.Popen = original

    def profile_dump(self) -> pstats.Stats:
        done = Path(self.out + ".done")
        done.unlink(missing_ok=True)
        self.server.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not done.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the server wrote no profile")
            time.sleep(0.05)
        return pstats.Stats(self.out)


def print_top(stats: pstats.Stats, requests: int, top: int) -> None:
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.replace(str(ROOT) + "/", "")
        if "site-packages/" in where:
            where = where.split("site-packages/", 1)[1]
        rows.append((tottime, cumtime, calls, f"{where}:{line}({name})"))
    per = 1e6 / requests
    print(f"  {'own us':>8} {'cum us':>8} {'calls':>7}  (per request)")
    for tottime, cumtime, calls, label in sorted(rows, reverse=True)[:top]:
        print(f"  {tottime * per:>8.1f} {cumtime * per:>8.1f} {calls / requests:>7.1f}  {label}")
    print("  -- by cumulative time, Typecase's own code")
    own = [r for r in rows if r[3].startswith("server/")]
    for tottime, cumtime, calls, label in sorted(own, key=lambda r: -r[1])[:top]:
        print(f"  {tottime * per:>8.1f} {cumtime * per:>8.1f} {calls / requests:>7.1f}  {label}")


async def profile(args) -> None:
    out = tempfile.mktemp(prefix="tc-profile-")
    with ProfiledStack(args.tokens, out) as stack:
        async with relay.Surfaces(
            stack.upstream_port, stack.http_port, stack.grpc_port, stack.model_id, args.tokens, stack.floor_ports
        ) as surfaces:
            for surface in args.surfaces.split(","):
                await relay.run_workers(surfaces, surface, 1, requests_each=50)  # warm up
                stack.server.send_signal(signal.SIGUSR1)
                await asyncio.sleep(0.1)
                result = await relay.run_workers(surfaces, surface, 1, requests_each=args.requests)
                stats = stack.profile_dump()
                print(
                    f"\n== {surface}: {result.requests} requests, {result.errors} errors, "
                    f"TTFT p50 {result.ttft_p50_ms:.2f} ms (profiled)"
                )
                print_top(stats, result.requests, args.top)
    Path(out).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["--serve"]:
        serve_profiled()
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--surfaces", default="grpc,sse,websocket,openai")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=1, help="tokens per upstream stream")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    asyncio.run(profile(args))


if __name__ == "__main__":
    main()
