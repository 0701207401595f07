"""PowerPoint decks with python-pptx: one chunk per slide, as RAGFlow cuts decks (its page is the slide number):
the title first as a Markdown heading, then the text of every shape in order (text frames, table cells, grouped
shapes), then the speaker notes. A slide longer than the embedding window is embedded in windows (ingest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import Options, Parsed, ParseError


def _shape_texts(shapes) -> Iterator[str]:
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6 and hasattr(shape, "shapes"):  # MSO_SHAPE_TYPE.GROUP
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                cells = [c.text.strip() for c in row.cells]
                if any(cells):
                    yield " | ".join(cells)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text.strip()
            if text:
                yield text


def parse_pptx(path: Path, options: Options) -> Parsed:
    try:
        from pptx import Presentation

        deck = Presentation(str(path))
        slides = list(deck.slides)
    except Exception as exc:
        raise ParseError(f"cannot read the PowerPoint deck: {exc}") from exc

    def sections() -> Iterator[Section]:
        any_text = False
        for number, slide in enumerate(slides, 1):
            title_shape = slide.shapes.title
            title = (
                title_shape.text_frame.text.strip() if title_shape is not None and title_shape.has_text_frame else ""
            )
            parts = [f"# {title}"] if title else []
            parts += [t for t in _shape_texts(slide.shapes) if t != title]
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
                if notes:
                    parts.append(notes)
            text = "\n\n".join(parts)
            any_text = any_text or bool(text.strip())
            yield Section(text, page=number, atomic=True, progress=number / max(len(slides), 1))
        if not any_text:
            raise ParseError("the deck has no text")

    return Parsed("pptx", sections(), page_count=len(slides))
