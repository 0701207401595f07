"""JSON: an array of records becomes N records per chunk (one JSON object a line); any other document is
pretty-printed and chunked like text."""

from __future__ import annotations

import json
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import Options, Parsed, ParseError
from .text import decoded_blocks


def parse_json(path: Path, options: Options) -> Parsed:
    raw = "".join(text for text, _ in decoded_blocks(path, options.block_chars))
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ParseError(f"invalid JSON: {exc}") from exc
    records = doc
    if isinstance(doc, dict) and len(doc) == 1 and isinstance(next(iter(doc.values())), list):
        records = next(iter(doc.values()))  # {"items": [...]}
    if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
        n = options.rows_per_chunk

        def sections():
            for start in range(0, len(records), n):
                block = records[start : start + n]
                text = "\n".join(json.dumps(r, ensure_ascii=False, sort_keys=False) for r in block)
                yield Section(text, atomic=True, progress=min((start + n) / len(records), 1.0))

        return Parsed("json", sections())
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    if not text.strip() or doc in (None, "", [], {}):
        raise ParseError("the JSON document is empty")
    return Parsed("json", iter([Section(text, progress=1.0)]))
