"""Tables (CSV, Excel): N rows per chunk, each chunk a Markdown table that repeats the header row, so every chunk
is understandable on its own. A workbook may hold at most knowledge_xlsx_max_cells cells, counted as openpyxl
yields them: openpyxl pads every row to the sheet's declared dimension, so `<dimension ref="A1:XFD1048576"/>` in a
2 KB file would otherwise ask for 17 billion cells."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from typecase.server.knowledge.chunking import Section

from . import LimitExceeded, Options, Parsed, ParseError
from .qa import qa_sections
from .text import SNIFF_BYTES, detect_encoding


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).replace("|", "/").split())


def _table(header: list[str], rows: list[list[str]], title: str = "") -> str:
    width = len(header)
    lines = [f"## {title}"] if title else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + " --- |" * width)
    for row in rows:
        row = (row + [""] * width)[:width] if len(row) <= width else row
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _blocks(rows: Iterable[list[str]], n: int, title: str = "", progress=lambda: None) -> Iterator[Section]:
    header: list[str] | None = None
    batch: list[list[str]] = []
    for row in rows:
        if not any(c.strip() for c in row):
            continue
        if header is None:
            header = [c or f"column {i + 1}" for i, c in enumerate(row)]
            continue
        batch.append(row)
        if len(batch) >= n:
            yield Section(_table(header, batch, title), atomic=True, progress=progress())
            batch = []
    if header is not None and batch:
        yield Section(_table(header, batch, title), atomic=True, progress=progress())


def parse_csv(path: Path, options: Options) -> Parsed:
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    encoding = detect_encoding(head, at_eof=len(head) < SNIFF_BYTES)
    sample = head.decode(encoding, errors="replace")[: 64 * 1024]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel

    def sections() -> Iterator[Section]:
        size = path.stat().st_size or 1
        with open(path, encoding=encoding, errors="replace", newline="") as text:
            reader = csv.reader(text, dialect)
            raw = cast(BinaryIO, text.buffer) if hasattr(text, "buffer") else None

            def progress() -> float | None:
                try:
                    return min(raw.tell() / size, 1.0) if raw is not None else None
                except (OSError, ValueError):
                    return None

            try:
                produced = False
                if options.qa:
                    for section in qa_sections(reader, options):
                        produced = True
                        yield section
                    return
                cells = ([_cell(c) for c in row] for row in reader)
                for section in _blocks(cells, options.rows_per_chunk, progress=progress):
                    produced = True
                    yield section
            except csv.Error as exc:
                raise ParseError(f"malformed CSV: {exc}") from exc
        if not produced:
            raise ParseError("the CSV has no data rows" + (" (question-answer pairs)" if options.qa else ""))

    return Parsed("csv", sections())


def parse_xlsx(path: Path, options: Options) -> Parsed:
    try:
        from openpyxl import load_workbook

        workbook = load_workbook(str(path), read_only=True, data_only=True)
    except Exception as exc:
        raise ParseError(f"cannot read the workbook: {exc}") from exc

    def sections() -> Iterator[Section]:
        produced = False
        sheets = workbook.worksheets
        cells = 0

        def counted_raw(row: tuple) -> tuple:
            nonlocal cells
            cells += len(row)
            if cells > options.xlsx_max_cells:
                raise LimitExceeded(
                    f"the workbook has more than {options.xlsx_max_cells} cells (knowledge_xlsx_max_cells)",
                    "knowledge_xlsx_max_cells",
                    options.xlsx_max_cells,
                )
            return row

        def counted(row: tuple) -> list[str]:
            return [_cell(c) for c in counted_raw(row)]

        try:
            pairs = 0
            for number, sheet in enumerate(sheets, 1):
                title = sheet.title if len(sheets) > 1 else ""
                if options.qa:
                    raw = (counted_raw(row) for row in sheet.iter_rows(values_only=True))
                    for section in qa_sections(raw, options, title, pairs):
                        produced = True
                        pairs += 1
                        yield section
                    yield Section("", progress=number / len(sheets))
                    continue
                rows = (counted(row) for row in sheet.iter_rows(values_only=True))
                for section in _blocks(rows, options.rows_per_chunk, title, progress=lambda: None):
                    produced = True
                    yield section
                yield Section("", progress=number / len(sheets))
        finally:
            workbook.close()
        if not produced:
            raise ParseError("the workbook has no data rows")

    return Parsed("xlsx", sections(), info={"sheets": len(workbook.worksheets)})
