"""Word documents with python-docx: paragraphs and tables in document order; headings keep their level as a
Markdown '#' prefix so chunks stay attached to their section titles."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import Options, Parsed, ParseError

_HEADING = re.compile(r"^(?:heading|标题)\s*(\d)", re.IGNORECASE)


def _heading_level(style_name: str) -> int:
    if style_name.lower() == "title":
        return 1
    m = _HEADING.match(style_name)
    return int(m.group(1)) if m else 0


def parse_docx(path: Path, options: Options) -> Parsed:
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        document = docx.Document(str(path))
    except Exception as exc:
        raise ParseError(f"cannot read the Word document: {exc}") from exc

    def sections() -> Iterator[Section]:
        any_text = False
        levels: dict[str | None, int] = {}  # by style id: python-docx scans every style per lookup (~1 ms)
        body = document.element.body
        for element in body.iterchildren():
            tag = element.tag.rsplit("}", 1)[-1]
            if tag == "p":
                paragraph = Paragraph(element, document)
                text = paragraph.text.strip()
                if not text:
                    continue
                if element.style not in levels:
                    style = paragraph.style
                    levels[element.style] = _heading_level(style.name if style is not None else "")
                level = levels[element.style]
                yield Section(("#" * level + " " + text if level else text) + "\n\n")
                any_text = True
            elif tag == "tbl":
                rows = []
                for row in Table(element, document).rows:
                    cells: list[str] = []
                    for cell in row.cells:
                        value = " ".join(cell.text.split())
                        if not cells or cells[-1] != value:  # merged cells repeat their text
                            cells.append(value)
                    if any(cells):
                        rows.append("| " + " | ".join(cells) + " |")
                if rows:
                    yield Section("\n".join(rows) + "\n\n")
                    any_text = True
        if not any_text:
            raise ParseError("the Word document contains no text")

    return Parsed("docx", sections())
