"""What parsing in capped child processes (knowledge/parse_pool.py) costs a small file.

    .venv/bin/python bench/knowledge/parse_overhead.py [--rounds 30]

Small files of every format (a few KB, the common upload) are parsed and chunked both ways, interleaved in random
order round by round (the VM's speed drifts): in-process, as ingestion did before (parsers.parse and chunking in
a worker thread), and through a ParsePool whose process is already started (parsing in the child, chunking in a
thread here). Printed per format: the medians, their ratio and difference; then what starting a parse process
costs the first file (paid once per process, and again after a process is retired or killed).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.knowledge import files  # noqa: E402
from typecase.server.knowledge import parsers  # noqa: E402
from typecase.server.knowledge.chunking import Rule, chunk_sections  # noqa: E402
from typecase.server.knowledge.parse_pool import Limits, ParsePool  # noqa: E402

RULE = Rule()
OPTIONS = parsers.Options()


def small_files() -> dict[str, bytes]:
    text = files.long_english(3)
    return {
        "note.txt": text.encode(),
        "note.md": ("# Note\n\n" + text).encode(),
        "page.html": files.html_bytes("Page", "<p>" + text + "</p>"),
        "memo.docx": files.docx_bytes([("h1", "Memo"), ("p", text)], table=[["a", "b"], ["1", "2"]]),
        "sheet.xlsx": files.xlsx_bytes({"S": [["city", "people"]] + [[f"c{i}", i] for i in range(40)]}),
        "table.csv": files.csv_bytes([["city", "people"]] + [[f"c{i}", i] for i in range(40)]),
        "report.pdf": files.pdf_bytes([text, text]),
        "faq.json": files.json_bytes([{"q": f"question {i}", "a": "answer"} for i in range(30)]),
    }


async def in_process(path: Path, fmt: str) -> int:
    return await asyncio.to_thread(lambda: len(list(chunk_sections(parsers.parse(path, fmt, OPTIONS).sections, RULE))))


async def in_child(pool: ParsePool, path: Path, fmt: str) -> int:
    async with pool.parse(path, fmt, OPTIONS) as parsed:
        return await asyncio.to_thread(lambda: len(list(chunk_sections(parsed.sections, RULE))))


async def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in small_files().items():
            (Path(tmp) / name).write_bytes(data)
            paths[name] = (Path(tmp) / name, parsers.detect(name).name)

        cold = []
        for _ in range(3):
            pool = ParsePool(Limits(processes=1))
            started = time.perf_counter()
            await in_child(pool, *paths["memo.docx"])
            cold.append(time.perf_counter() - started)
            await pool.close()

        pool = ParsePool(Limits(processes=1))
        times: dict[str, dict[str, list[float]]] = {name: {"in-process": [], "child": []} for name in paths}
        for name, (path, fmt) in paths.items():  # warm both paths (imports, the child)
            assert await in_process(path, fmt) == await in_child(pool, path, fmt), name
        for _ in range(args.rounds):
            for name in rng.sample(list(paths), len(paths)):
                path, fmt = paths[name]
                ways = [("in-process", lambda: in_process(path, fmt)), ("child", lambda: in_child(pool, path, fmt))]
                for way, run in rng.sample(ways, 2):
                    started = time.perf_counter()
                    await run()
                    times[name][way].append(time.perf_counter() - started)
        await pool.close()

    result: dict = {"cold_start_seconds": statistics.median(cold), "formats": {}}
    print(f"{'file':<12} {'in-process ms':>14} {'child ms':>10} {'ratio':>7} {'added ms':>9}")
    for name, ways in times.items():
        a, b = statistics.median(ways["in-process"]), statistics.median(ways["child"])
        result["formats"][name] = {"in_process": a, "child": b}
        print(f"{name:<12} {a * 1000:>14.2f} {b * 1000:>10.2f} {b / a:>7.2f} {(b - a) * 1000:>9.2f}")
    added = statistics.median(f["child"] - f["in_process"] for f in result["formats"].values())
    result["median_added_seconds"] = added
    print(
        f"median added per small file: {added * 1000:.2f} ms; starting a parse process: "
        f"{result['cold_start_seconds'] * 1000:.0f} ms (first file of a process)"
    )
    return result


if __name__ == "__main__":
    asyncio.run(main())
