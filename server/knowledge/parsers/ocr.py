"""OCR for images (png, jpg) and for the image-only pages of scanned PDFs, with RapidOCR on onnxruntime.

Why RapidOCR (rapidocr-onnxruntime): its PP-OCR detection, direction and recognition models (~15 MB) ship inside
the PyPI package, so nothing is downloaded at run time; it reads English and Chinese with one model set and runs
on the CPU. Measured here on generated one-line images (Pillow, DejaVu Sans and Noto Sans CJK at 28 px): both
sentences read back exactly; load ~1.6 s once per parse process, then seconds per image on this shared 2-core
machine (bench/knowledge/quality.py prints OCR pages a minute).

Limits: an image is opened by Pillow first and refused past knowledge_ocr_max_pixels (a decompression bomb is a
small PNG of a huge canvas); the engine runs inside the parse process, under its memory and CPU caps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import LimitExceeded, Options, Parsed, ParseError

_engine = None
_lock = threading.Lock()


def engine():
    """One RapidOCR per process (the parse process is reused between files)."""
    global _engine
    with _lock:
        if _engine is None:
            _raise_memory_cap()
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise ParseError(f"OCR is not installed (pip install rapidocr-onnxruntime): {exc}") from exc
            # One thread each: the parse processes already run in parallel, and every onnxruntime thread maps
            # its own stack and arena (measured: 1.75 GiB of address space with defaults, 1.38 GiB with one).
            _engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
        return _engine


def _raise_memory_cap() -> None:
    """Lift the parse process's soft address-space cap to its hard cap (knowledge_ocr_memory_bytes), see
    parse_pool.Limits.ocr_memory_bytes."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and hard != soft:
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _check_pixels(width: int, height: int, options: Options) -> None:
    if width * height > options.ocr_max_pixels:
        raise LimitExceeded(
            f"the image is {width}x{height} pixels, over the OCR limit of {options.ocr_max_pixels} "
            "pixels (knowledge_ocr_max_pixels)",
            "knowledge_ocr_max_pixels",
            options.ocr_max_pixels,
        )


def read_image(image, options: Options) -> str:
    """The text of a Pillow image, lines in reading order (top to bottom, then left to right)."""
    import numpy as np

    _check_pixels(image.width, image.height, options)
    array = np.asarray(image.convert("RGB"))[:, :, ::-1]  # RapidOCR takes BGR arrays, as OpenCV reads them
    result, _ = engine()(array)
    lines = sorted(result or [], key=lambda r: (round(min(p[1] for p in r[0]) / 16), min(p[0] for p in r[0])))
    return "\n".join(str(r[1]) for r in lines if str(r[1]).strip())


def parse_image(path: Path, options: Options) -> Parsed:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with its setting's name
    try:
        image = Image.open(path)
        _check_pixels(image.width, image.height, options)
        image.load()
    except (LimitExceeded, ParseError):
        raise
    except Exception as exc:
        raise ParseError(f"cannot read the image: {exc}") from exc

    def sections() -> Iterator[Section]:
        text = read_image(image, options)
        if not text.strip():
            raise ParseError("OCR found no text in the image")
        yield Section(text, page=1, progress=1.0)

    return Parsed("image", sections(), page_count=1)


def pdf_page_images(page, options: Options) -> str:
    """OCR of the images drawn on a PDF page that has no text layer (a scanned page)."""
    texts = []
    for image in page.images:
        texts.append(read_image(image.image, options))
    return "\n".join(t for t in texts if t.strip())
