"""Plain text and Markdown: encoding detected from the head of the file, then decoded and yielded in blocks
(never the whole file in memory)."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import Options, Parsed, ParseError

SNIFF_BYTES = 256 * 1024
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def looks_binary(head: bytes) -> bool:
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return False
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return bool(head) and control / len(head) > 0.1


def detect_encoding(head: bytes, at_eof: bool) -> str:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=at_eof)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    if best is not None and best.encoding:
        return best.encoding
    return "gb18030"  # the common non-UTF-8 encoding of Chinese documents; it decodes any byte sequence


def decoded_blocks(path: Path, block_bytes: int) -> Iterator[tuple[str, float]]:
    """(text, fraction of the file consumed) blocks, decoded with the detected encoding."""
    size = path.stat().st_size or 1
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        encoding = detect_encoding(head, at_eof=len(head) < SNIFF_BYTES)
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        consumed = len(head)
        data = head
        while data:
            text = decoder.decode(data)
            if text:
                yield text.replace("\r\n", "\n").replace("\r", "\n"), min(consumed / size, 1.0)
            data = f.read(block_bytes)
            consumed += len(data)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail, 1.0


def parse_text(path: Path, fmt: str, options: Options) -> Parsed:
    def sections() -> Iterator[Section]:
        any_text = False
        for text, fraction in decoded_blocks(path, options.block_chars):
            any_text = any_text or bool(text.strip())
            yield Section(text, progress=fraction)
        if not any_text:
            raise ParseError("the document contains no text")

    return Parsed(fmt, sections())


def parse_plain(path: Path, options: Options) -> Parsed:
    return parse_text(path, "txt", options)


def parse_markdown(path: Path, options: Options) -> Parsed:
    return parse_text(path, "md", options)
