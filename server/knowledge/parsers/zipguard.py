"""The zip container of Office files (docx, xlsx; pptx later), checked before a parser opens it.

A 366 KB .docx holding a 300 MB document.xml took 670 MB of RSS and 24 s of CPU to parse (issue 18, measured):
python-docx reads a part whole and lxml builds its tree. Python's zipfile returns no more than the size the central
directory declares (and fails on a CRC mismatch), but never asks whether that size is reasonable. So, first:

- declared sizes: the entries' uncompressed sizes must add up to at most knowledge_zip_max_unpacked_bytes, and an
  entry larger than knowledge_zip_ratio_grace_bytes may expand at most knowledge_zip_max_ratio times (the two
  checks of Apache POI's ZipSecureFile; deflate's ceiling is ~1032:1, the most repetitive real documents measured
  here stay under 300:1);
- actual sizes: every entry is inflated once, streamed in 1 MiB reads, counting what it really holds against its
  declaration and the same total, so a header that lies is caught without the data ever being held;
- only the compression methods OPC allows (stored, deflate): bzip2 and LZMA reach millions to one;
- no DTD in the XML parts (OPC [M1.18] makes a DTD an error; it is where entity-expansion bombs start). Only XML
  parts (.xml, .rels, .vml) are scanned: SVG images often carry a harmless DOCTYPE, and binary parts such as the
  printer settings PowerPoint for the Mac embeds (a plist with its DOCTYPE) are never read as XML.

No maintained Python library makes these checks (zipfile has none, defusedxml covers XML only), hence this module.
"""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

from . import LimitExceeded, Options, ParseError

_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_DTD = b"<!DOCTYPE"
_READ_BYTES = 1024 * 1024


def check_zip(path: Path, options: Options) -> None:
    """Raise LimitExceeded / ParseError unless the archive is a plausible Office package."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            _check_declared(entries, options)
            total = 0
            for entry in entries:
                total += _inflated_size(archive, entry, options.zip_max_unpacked_bytes - total, options)
    except ParseError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, a bad CRC: all mean a broken container
        raise ParseError(f"the file is not a readable zip archive: {exc}") from exc


def _check_declared(entries: list[zipfile.ZipInfo], options: Options) -> None:
    declared = sum(entry.file_size for entry in entries)
    if declared > options.zip_max_unpacked_bytes:
        raise LimitExceeded(
            f"the archive declares {declared} bytes once unpacked, over the limit of {options.zip_max_unpacked_bytes} "
            "bytes (knowledge_zip_max_unpacked_bytes)",
            "knowledge_zip_max_unpacked_bytes",
            options.zip_max_unpacked_bytes,
        )
    for entry in entries:
        if entry.flag_bits & 0x1:
            raise ParseError(f"the archive entry {entry.filename!r} is encrypted")
        if entry.compress_type not in _METHODS:
            raise ParseError(
                f"the archive entry {entry.filename!r} uses compression method {entry.compress_type}; "
                "Office documents use only stored or deflate"
            )
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > options.zip_ratio_grace_bytes and ratio > options.zip_max_ratio:
            raise LimitExceeded(
                f"the archive entry {entry.filename!r} expands {ratio:.0f} times ({entry.compress_size} to "
                f"{entry.file_size} bytes), over the limit of {options.zip_max_ratio} (knowledge_zip_max_ratio)",
                "knowledge_zip_max_ratio",
                options.zip_max_ratio,
            )


def _inflated_size(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, budget: int, options: Options) -> int:
    """The bytes the entry really holds, read as a stream, never more than `budget` plus one read."""
    probe = copy.copy(entry)
    # zipfile stops (and checks the CRC) at the declared size: let it read past a lie, up to the limit plus a read.
    probe.file_size = budget + _READ_BYTES + 1
    scan = entry.filename.lower().endswith((".xml", ".rels", ".vml"))
    size, tail = 0, b""
    with archive.open(probe) as stream:
        while chunk := stream.read(_READ_BYTES):
            size += len(chunk)
            if size > budget:
                raise LimitExceeded(
                    f"the archive entry {entry.filename!r} unpacks to more than the limit of "
                    f"{options.zip_max_unpacked_bytes} bytes for the whole file (knowledge_zip_max_unpacked_bytes), "
                    f"though its header declares {entry.file_size} bytes",
                    "knowledge_zip_max_unpacked_bytes",
                    options.zip_max_unpacked_bytes,
                )
            if scan and _DTD in tail + chunk:
                raise ParseError(
                    f"the archive entry {entry.filename!r} declares a DTD; Office documents may not "
                    "(OPC M1.18), and XML entity expansion is refused"
                )
            tail = chunk[-len(_DTD) :]  # a DTD split across two reads
    if size != entry.file_size:
        raise ParseError(
            f"the archive entry {entry.filename!r} holds {size} bytes but its header declares "
            f"{entry.file_size}: the archive is corrupt or forged"
        )
    return size
