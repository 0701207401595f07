"""Parsers: one module per format, each turning a stored file into a stream of Sections.

`detect()` decides the format from the name and declared type at upload time; `parse()` checks the content
(magic bytes, text decoding, the zip container of Office files) before trusting that decision, so a mislabelled
or hostile file fails cleanly. A format is one row of FORMATS naming its parser function ("module:function" in
this package, imported on first use): a new format (pptx, images for OCR) is a row and a module.

Untrusted documents are parsed in a child process under memory and CPU caps (knowledge/parse_pool.py); the limits
here (Options) are the early, precise refusals that name the setting a file broke.
"""

from __future__ import annotations

import importlib
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from typecase.server.knowledge.chunking import Section

MiB = 1024 * 1024


class UnsupportedFileType(ValueError):
    """The file is not of a format we can parse."""


class ParseError(ValueError):
    """The file is of a supported format but could not be turned into text (corrupt, encrypted, empty)."""


class LimitExceeded(ParseError):
    """The file breaks a parser limit; `setting` names the knowledge setting (without its TYPECASE_ prefix)."""

    def __init__(self, message: str, setting: str, value: int | float):
        super().__init__(message)
        self.setting = setting
        self.value = value


@dataclass(frozen=True)
class Format:
    name: str
    mime_type: str
    extensions: tuple[str, ...]
    mime_aliases: tuple[str, ...] = ()
    parser: str = ""  # "module:function" in this package; the function takes (path, options) -> Parsed
    kind: str = "text"  # how the content is sniffed: "text" (not binary), "pdf" (%PDF- header), "zip" (OOXML)
    whole: bool = False  # parsed whole in memory, so capped by Options.max_structured_bytes


FORMATS = (
    Format("txt", "text/plain", (".txt", ".text", ".log"), parser="text:parse_plain"),
    Format("md", "text/markdown", (".md", ".markdown"), ("text/x-markdown",), parser="text:parse_markdown"),
    Format(
        "html",
        "text/html",
        (".html", ".htm", ".xhtml"),
        ("application/xhtml+xml",),
        parser="html:parse_html",
        whole=True,
    ),
    Format("pdf", "application/pdf", (".pdf",), parser="pdf:parse_pdf", kind="pdf"),
    Format(
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        (".docx",),
        parser="docx:parse_docx",
        kind="zip",
        whole=True,
    ),
    Format("csv", "text/csv", (".csv",), ("application/csv",), parser="table:parse_csv"),
    Format(
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        (".xlsx", ".xlsm"),
        parser="table:parse_xlsx",
        kind="zip",
    ),
    Format("json", "application/json", (".json",), ("text/json",), parser="jsondoc:parse_json", whole=True),
    Format(
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        (".pptx",),
        parser="pptx:parse_pptx",
        kind="zip",
    ),
    Format("png", "image/png", (".png",), parser="ocr:parse_image", kind="png"),
    Format("jpg", "image/jpeg", (".jpg", ".jpeg"), ("image/jpg",), parser="ocr:parse_image", kind="jpg"),
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
    """Parser options and limits (the knowledge_* settings of the same names, see server/config.py)."""

    rows_per_chunk: int = 20
    max_structured_bytes: int = 64 * MiB
    block_chars: int = 64 * 1024
    zip_max_unpacked_bytes: int = 128 * MiB
    zip_max_ratio: int = 500
    zip_ratio_grace_bytes: int = 1 * MiB
    pdf_max_pages: int = 5000
    pdf_max_stream_bytes: int = 64 * MiB
    xlsx_max_cells: int = 10_000_000
    ocr_max_pixels: int = 40_000_000
    pdf_ocr: bool = True  # OCR the images of PDF pages that have no text layer
    qa: bool = False  # tables are question-answer pairs (parsers/qa.py), for question-answer knowledge bases
    qa_max_pairs: int = 100_000
    qa_question_max_chars: int = 2000
    qa_answer_max_chars: int = 32_000
    qa_max_similar_questions: int = 50


def _sniff(path: Path, fmt: Format) -> None:
    with open(path, "rb") as f:
        head = f.read(4096)
    if fmt.kind == "pdf" and b"%PDF-" not in head[:1024]:
        raise UnsupportedFileType("the file is named or declared as PDF but its content is not a PDF")
    if fmt.kind == "png" and not head.startswith(b"\x89PNG\r\n\x1a\n"):
        raise UnsupportedFileType("the file is named or declared as PNG but its content is not a PNG")
    if fmt.kind == "jpg" and not head.startswith(b"\xff\xd8\xff"):
        raise UnsupportedFileType("the file is named or declared as JPEG but its content is not a JPEG")
    if fmt.kind == "zip" and not head.startswith(b"PK\x03\x04"):
        raise UnsupportedFileType(f"the file is named or declared as {fmt.name} but its content is not one")
    if fmt.kind == "text":
        from .text import looks_binary

        if looks_binary(head):
            raise UnsupportedFileType(f"the file is named or declared as {fmt.name} but its content is binary")


def parse(path: Path, fmt: Format | str, options: Options = Options()) -> Parsed:
    """Open a local copy of a file; sections are produced lazily (iterate in a worker thread)."""
    fmt = BY_NAME[fmt] if isinstance(fmt, str) else fmt
    if not fmt.parser:
        raise UnsupportedFileType(f"no parser for {fmt.name}")
    _sniff(path, fmt)
    if fmt.whole and path.stat().st_size > options.max_structured_bytes:
        raise LimitExceeded(
            f"{fmt.name} files are parsed whole and this one exceeds the limit of "
            f"{options.max_structured_bytes} bytes (knowledge_max_structured_bytes)",
            "knowledge_max_structured_bytes",
            options.max_structured_bytes,
        )
    if fmt.kind == "zip":
        from .zipguard import check_zip

        check_zip(path, options)
    module, function = fmt.parser.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)(path, options)
