"""PDF with pypdf: text page by page, each chunk remembering the page it starts on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import Options, Parsed, ParseError

logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns loudly about harmless quirks


def parse_pdf(path: Path, options: Options) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
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

    def sections() -> Iterator[Section]:
        any_text = False
        for number in range(1, pages + 1):
            try:
                text = reader.pages[number - 1].extract_text() or ""
            except Exception as exc:
                raise ParseError(f"cannot extract text from page {number}: {exc}") from exc
            any_text = any_text or bool(text.strip())
            yield Section(text, page=number, progress=number / pages)
        if not any_text:
            raise ParseError("the PDF has no extractable text (scanned images need OCR, which is not supported)")

    return Parsed("pdf", sections(), page_count=pages)
