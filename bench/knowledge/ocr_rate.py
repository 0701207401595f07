"""OCR throughput: scanned pages per minute through the parse pool (as ingestion runs it), with word accuracy.

    .venv/bin/python bench/knowledge/ocr_rate.py [--pages 6] [--dpi 150]

Pages are rendered here with Pillow: A4 at --dpi, 30 lines of English prose (DejaVu Sans, 11 pt), saved as an
image-only PDF (no text layer, as a scanner writes it) and as separate PNGs. Each is parsed in a ParsePool child
(RapidOCR inside, the engine loaded once per process: the first file pays the model load, printed apart). Printed:
pages per minute for the PDF and for PNGs, and the share of rendered words found in the OCR text.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from typecase.server.knowledge import parsers  # noqa: E402
from typecase.server.knowledge.parse_pool import Limits, ParsePool  # noqa: E402

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
PROSE = (
    "The maintenance crew inspected the northern pumping station on Tuesday and replaced two worn valves. "
    "Water pressure returned to normal within the hour, and the backup generator passed its monthly test. "
    "Next quarter the team will repaint the storage tanks and calibrate every flow meter on the western line. "
)


def page_lines(n: int, lines: int = 30, width_chars: int = 80) -> list[str]:
    words = (PROSE * 40).split()
    start = (n * 37) % 60
    out, line = [], f"Page {n + 1}."
    for word in words[start:]:
        if len(line) + len(word) + 1 > width_chars:
            out.append(line)
            line = word
            if len(out) == lines:
                break
        else:
            line += " " + word
    return out


def render_page(lines: list[str], dpi: int):
    from PIL import Image, ImageDraw, ImageFont

    width, height = int(8.27 * dpi), int(11.69 * dpi)
    font = ImageFont.truetype(FONT, max(int(11 / 72 * dpi), 8))
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    step = int(font.size * 1.6)
    for i, line in enumerate(lines):
        draw.text((int(0.8 * dpi), int(0.8 * dpi) + i * step), line, fill=0, font=font)
    return image


def accuracy(truth: list[str], text: str) -> float:
    want = [w.lower() for line in truth for w in re.findall(r"[A-Za-z]+", line)]
    got = set(w.lower() for w in re.findall(r"[A-Za-z]+", text))
    return sum(1 for w in want if w in got) / max(len(want), 1)


async def parse_text(pool: ParsePool, path: Path, fmt: str) -> str:
    options = parsers.Options()
    async with pool.parse(path, fmt, options) as parsed:
        return await asyncio.to_thread(lambda: "\n".join(s.text for s in parsed.sections))


async def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--dpi", type=int, default=150)
    args = parser.parse_args(argv)
    truths = [page_lines(n) for n in range(args.pages)]
    images = [render_page(t, args.dpi) for t in truths]
    pool = ParsePool(Limits(processes=1, cpu_seconds=1200))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        warm = work / "warm.png"
        render_page(["Warm up the OCR engine."], args.dpi).save(warm)
        started = time.perf_counter()
        await parse_text(pool, warm, "png")
        out["load_seconds"] = time.perf_counter() - started

        pdf = work / "scan.pdf"
        buffer = io.BytesIO()
        images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=args.dpi)
        pdf.write_bytes(buffer.getvalue())
        started = time.perf_counter()
        text = await parse_text(pool, pdf, "pdf")
        seconds = time.perf_counter() - started
        out["pdf"] = {
            "pages": args.pages,
            "seconds": seconds,
            "pages_per_minute": 60 * args.pages / seconds,
            "accuracy": accuracy([line for t in truths for line in t], text),
        }

        texts, seconds = [], 0.0
        for i, image in enumerate(images):
            path = work / f"page{i}.png"
            image.save(path)
            started = time.perf_counter()
            texts.append(await parse_text(pool, path, "png"))
            seconds += time.perf_counter() - started
        out["png"] = {
            "pages": args.pages,
            "seconds": seconds,
            "pages_per_minute": 60 * args.pages / seconds,
            "accuracy": sum(accuracy(t, x) for t, x in zip(truths, texts)) / args.pages,
        }
    await pool.close()
    print(f"== OCR (RapidOCR in a parse process), A4 pages at {args.dpi} dpi, 30 lines each ==")
    print(f"engine load (first file of a process): {out['load_seconds']:.1f}s")
    for label in ("pdf", "png"):
        r = out[label]
        print(
            f"{label:>4}: {r['pages']} pages in {r['seconds']:6.1f}s = {r['pages_per_minute']:5.1f} pages/minute, "
            f"words found {r['accuracy']:.1%}"
        )
    return out


if __name__ == "__main__":
    asyncio.run(main())
