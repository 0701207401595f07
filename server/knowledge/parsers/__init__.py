"""Parsers: one module per format, each turning a stored file into a stream of Sections.

`detect()` decides the format from the name and declared type at upload time; `parse()` checks the content
(magic bytes, text decoding) before trusting that decision, so a mislabelled file fails cleanly.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from typecase.server.knowledge.chunking import Section


class UnsupportedFileType(ValueError):
    """The file is not of a format we can parse."""


class ParseError(ValueError):
    """The file is of a supported format but could not be turned into text (corrupt, encrypted, empty)."""


@dataclass(frozen=True)
class Format:
    name: str
    mime_type: str
    extensions: tuple[str, ...]
    mime_aliases: tuple[str, ...] = ()


FORMATS = (
    Format("txt", "text/plain", (".txt", ".text", ".log")),
    Format("md", "text/markdown", (".md", ".markdown"), ("text/x-markdown",)),
    Format("html", "text/html", (".html", ".htm", ".xhtml"), ("application/xhtml+xml",)),
    Format("pdf", "application/pdf", (".pdf",)),
    Format("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", (".docx",)),
    Format("csv", "text/csv", (".csv",), ("application/csv",)),
    Format("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", (".xlsx", ".xlsm")),
    Format("json", "application/json", (".json",), ("text/json",)),
)
BY_NAME = {f.name: f for f in FORMATS}
_BY_EXTENSION = {ext: f for f in FORMATS for ext in f.extensions}
_BY_MIME = {m: f for f in FORMATS for m in (f.mime_type, *f.mime_aliases)}
SUPPORTED_EXTENSIONS = tuple(sorted(_BY_EXTENSION))


def extension(file_name: str) -> str:
    return PurePosixPath(file_name.replace("\\", "/")).suffix.lower()


def detect(file_name: str, content_type: str = "") -> Format:
    """The format by extension, else by the declared MIME type; UnsupportedFileType when neither is known."""
    fmt = _BY_EXTENSION.get(extension(file_name))
    if fmt is None and content_type:
        fmt = _BY_MIME.get(content_type.split(";")[0].strip().lower())
    if fmt is None:
        guessed = mimetypes.guess_type(file_name)[0] or content_type or "unknown"
        raise UnsupportedFileType(
            f"{file_name!r} ({guessed}) is not a supported type; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    return fmt


@dataclass
class Parsed:
    format: str
    sections: Iterator[Section]
    page_count: int = 0
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    rows_per_chunk: int = 20
    max_structured_bytes: int = 64 * 1024 * 1024
    block_chars: int = 64 * 1024


def _sniff(path: Path, fmt: Format) -> None:
    with open(path, "rb") as f:
        head = f.read(4096)
    if fmt.name == "pdf" and b"%PDF-" not in head[:1024]:
        raise UnsupportedFileType("the file is named or declared as PDF but its content is not a PDF")
    if fmt.name in ("docx", "xlsx") and not head.startswith(b"PK\x03\x04"):
        raise UnsupportedFileType(f"the file is named or declared as {fmt.name} but its content is not one")
    if fmt.name in ("txt", "md", "html", "csv", "json"):
        from .text import looks_binary

        if looks_binary(head):
            raise UnsupportedFileType(f"the file is named or declared as {fmt.name} but its content is binary")


def parse(path: Path, fmt: Format | str, options: Options = Options()) -> Parsed:
    """Open a local copy of a file; sections are produced lazily (iterate in a worker thread)."""
    fmt = BY_NAME[fmt] if isinstance(fmt, str) else fmt
    _sniff(path, fmt)
    if fmt.name in ("html", "json", "docx") and path.stat().st_size > options.max_structured_bytes:
        raise ParseError(f"{fmt.name} files are parsed whole and this one exceeds {options.max_structured_bytes} bytes")
    if fmt.name in ("txt", "md"):
        from .text import parse_text

        return parse_text(path, fmt.name, options)
    if fmt.name == "html":
        from .html import parse_html

        return parse_html(path, options)
    if fmt.name == "pdf":
        from .pdf import parse_pdf

        return parse_pdf(path, options)
    if fmt.name == "docx":
        from .docx import parse_docx

        return parse_docx(path, options)
    if fmt.name == "csv":
        from .table import parse_csv

        return parse_csv(path, options)
    if fmt.name == "xlsx":
        from .table import parse_xlsx

        return parse_xlsx(path, options)
    if fmt.name == "json":
        from .jsondoc import parse_json

        return parse_json(path, options)
    raise UnsupportedFileType(f"no parser for {fmt.name}")
