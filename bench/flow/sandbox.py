"""What the code sandbox costs per code node: the same trivial code run through Sandbox.run_python in bubblewrap
(namespaces, the seccomp filter, the runtime's read-only binds, the privilege drop) and as the plain `python -I -S`
child process it replaces (the unsafe unsandboxed mode, same program and limits), interleaved so that the machine's
drift hits both alike. Also the one-off start-up check.

    .venv/bin/python bench/flow/sandbox.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = "def main(n):\n    return {'double': n * 2}"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> dict:
    from typecase.server.sandbox import Limits, Sandbox, SandboxConfig

    began = time.perf_counter()
    sandboxed = Sandbox(SandboxConfig())
    await sandboxed.start()
    first_start = time.perf_counter() - began
    assert sandboxed.refusal is None, sandboxed.refusal
    began = time.perf_counter()
    await Sandbox(SandboxConfig()).start()
    later_start = time.perf_counter() - began
    plain = Sandbox(SandboxConfig(bwrap_path=str(ROOT / "no-such-bwrap"), allow_unsandboxed=True))
    await plain.start()
    assert plain.unsandboxed

    limits = Limits(wall_seconds=30, cpu_seconds=5, memory_bytes=256 << 20, output_bytes=1 << 20, file_bytes=1 << 20)
    times: dict[str, list[float]] = {"plain": [], "sandbox": []}
    for i in range(args.runs):
        for name, runner in (("plain", plain), ("sandbox", sandboxed))[:: 1 if i % 2 else -1]:
            began = time.perf_counter()
            result = await runner.run_python(CODE, {"n": i}, limits)
            times[name].append(time.perf_counter() - began)
            assert result.outputs == {"double": 2 * i}
    plain_ms = statistics.median(times["plain"]) * 1000
    sandbox_ms = statistics.median(times["sandbox"]) * 1000
    print(f"code node run, median of {args.runs} interleaved runs each:")
    print(f"  plain process (what it replaces)  {plain_ms:8.1f} ms")
    print(
        f"  bubblewrap sandbox                {sandbox_ms:8.1f} ms   ratio {sandbox_ms / plain_ms:.2f}x, "
        f"+{sandbox_ms - plain_ms:.1f} ms"
    )
    print(
        f"start-up self-check: {first_start * 1000:.0f} ms the first time in a process (ldd of the runtime), "
        f"{later_start * 1000:.0f} ms after"
    )
    return {
        "plain_ms": plain_ms,
        "sandbox_ms": sandbox_ms,
        "ratio": sandbox_ms / plain_ms,
        "first_start_ms": first_start * 1000,
        "later_start_ms": later_start * 1000,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main(parse(sys.argv[1:])))
