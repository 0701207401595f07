"""Documents read as plain text for a chat turn (files attached to a question), with the knowledge parsers in their
capped parse processes (parse_pool.py): the same formats, decompression and page limits as ingestion, and a hostile
file fails that attachment, never the server.

The chat domain sees this through its `DocumentReader` Protocol (app.py hands it in)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc

from typecase.server.knowledge import parsers
from typecase.server.knowledge.chunking import Rule, Section, chunk_sections
from typecase.server.knowledge.parse_pool import ParsePool
from typecase.server.rpc.errors import TypecaseError


class AttachmentReader:
    def __init__(self, pool: ParsePool, tmp_dir: Path, options: parsers.Options):
        self.pool = pool
        self.tmp_dir = tmp_dir
        self.options = options

    async def read_text(self, name: str, mime_type: str, data: bytes, max_chars: int) -> tuple[str, bool]:
        """The document's text, at most `max_chars` of it; True when it was cut there."""
        try:
            fmt = parsers.detect(name, mime_type)
        except parsers.UnsupportedFileType as exc:
            raise TypecaseError(
                grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FILE_TYPE", str(exc), {"file_name": name}
            ) from None
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        local = self.tmp_dir / f"chat-{uuid.uuid4().hex}{fmt.extensions[0]}"
        await asyncio.to_thread(local.write_bytes, data)
        try:
            async with self.pool.parse(local, fmt.name, self.options) as parsed:
                return await asyncio.to_thread(_collect, parsed.sections, max_chars)
        except parsers.ParseError as exc:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "PARSE_FAILED",
                f"the attached file {name!r} could not be read: {exc}",
                {"file_name": name},
            ) from None
        finally:
            local.unlink(missing_ok=True)

    async def chunk_text(self, text: str, chunk_tokens: int) -> list[str]:
        """`text` cut into chunks of at most `chunk_tokens` by the knowledge chunker's default separators (a tenth
        overlapping), for a chat session's scratch index."""
        rule = Rule(chunk_size=chunk_tokens, chunk_overlap=chunk_tokens // 10)
        return await asyncio.to_thread(lambda: [c.text for c in chunk_sections([Section(text)], rule)])


def _collect(sections, max_chars: int) -> tuple[str, bool]:
    pieces, size = [], 0
    for section in sections:
        text = section.text.strip()
        if not text:
            continue
        if size + len(text) > max_chars:
            pieces.append(text[: max(0, max_chars - size)])
            return "\n\n".join(pieces), True
        pieces.append(text)
        size += len(text) + 2
    return "\n\n".join(pieces), False
