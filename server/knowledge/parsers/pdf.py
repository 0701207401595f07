"""PDF with pypdf: text page by page, each chunk remembering the page it starts on.

Limits: at most knowledge_pdf_max_pages pages, and every decompressed stream (content streams, object streams,
whichever filter) at most knowledge_pdf_max_stream_bytes, through pypdf's own configuration. pypdf applies its
limit per stream; the parse process's memory and CPU caps bound the sum.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import LimitExceeded, Options, Parsed, ParseError

logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns loudly about harmless quirks


@contextlib.contextmanager
def _limits(options: Options) -> Iterator[None]:
    """pypdf's decompression limits set to ours, and its LimitReachedError told as the setting that caps it."""
    from pypdf import apply_configuration
    from pypdf.errors import LimitReachedError

    cap = options.pdf_max_stream_bytes
    try:
        with apply_configuration(
            None,
            zlib_maximum_output_length=cap,
            lzw_maximum_output_length=cap,
            run_length_maximum_output_length=cap,
            brotli_maximum_output_length=cap,
            jbig2_maximum_output_length=cap,
            maximum_declared_stream_length=cap,
            array_based_stream_maximum_output_length=cap,
            jbig2dec_binary=None,
        ):
            yield
    except LimitReachedError as exc:
        raise LimitExceeded(
            f"the PDF holds a stream or structure beyond the parser's limits: {exc} (one decompressed "
            f"stream may be at most {cap} bytes: knowledge_pdf_max_stream_bytes)",
            "knowledge_pdf_max_stream_bytes",
            cap,
        ) from exc


def parse_pdf(path: Path, options: Options) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        with _limits(options):
            reader = PdfReader(str(path))
            if reader.is_encrypted:
                try:
                    if not reader.decrypt(""):
                        raise ParseError("the PDF is encrypted with a password")
                except (NotImplementedError, PdfReadError) as exc:
                    raise ParseError(f"the PDF is encrypted: {exc}") from exc
            pages = len(reader.pages)
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"cannot read the PDF: {exc}") from exc
    if pages == 0:
        raise ParseError("the PDF has no pages")
    if pages > options.pdf_max_pages:
        raise LimitExceeded(
            f"the PDF has {pages} pages, over the limit of {options.pdf_max_pages} (knowledge_pdf_max_pages)",
            "knowledge_pdf_max_pages",
            options.pdf_max_pages,
        )

    def sections() -> Iterator[Section]:
        any_text = False
        for number in range(1, pages + 1):
            try:
                with _limits(options):
                    text = reader.pages[number - 1].extract_text() or ""
            except ParseError:
                raise
            except Exception as exc:
                raise ParseError(f"cannot extract text from page {number}: {exc}") from exc
            if not text.strip() and options.pdf_ocr:  # a scanned page: read the images drawn on it
                from .ocr import pdf_page_images

                try:
                    with _limits(options):
                        text = pdf_page_images(reader.pages[number - 1], options)
                except ParseError:
                    raise
                except Exception as exc:
                    raise ParseError(f"cannot OCR the images of page {number}: {exc}") from exc
            any_text = any_text or bool(text.strip())
            yield Section(text, page=number, progress=number / pages)
        if not any_text:
            raise ParseError("the PDF has no extractable text, and OCR found none in its images")

    return Parsed("pdf", sections(), page_count=pages)
