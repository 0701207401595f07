"""Hostile documents made by the tests: zip bombs in valid Office packages (a docx whose document.xml unpacks to
hundreds of MB, an xlsx whose sheet does), a zip whose headers understate an entry's size, a billion-laughs DTD,
an xlsx whose declared dimension pads rows to 16,384 columns. Large entries are written as streams, so building
a 300 MB bomb never holds 300 MB here."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable

from . import files

MiB = 1024 * 1024
BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]>"
)


def _rebuild(package: bytes, replace: dict[str, Callable[[bytes, zipfile.ZipFile], None]]) -> bytes:
    """The package with some entries rewritten: replace[name](original, archive) writes the new entry itself."""
    source = zipfile.ZipFile(io.BytesIO(package))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for info in source.infolist():
            original = source.read(info.filename)
            if info.filename in replace:
                replace[info.filename](original, archive)
            else:
                archive.writestr(info.filename, original)
    return out.getvalue()


def _streamed(name: str, head: bytes, unit: bytes, unpacked_bytes: int, tail: bytes):
    def write(original: bytes, archive: zipfile.ZipFile) -> None:
        block = unit * max(1, MiB // len(unit))
        with archive.open(name, "w") as f:
            f.write(head)
            for _ in range(max(1, unpacked_bytes // len(block))):
                f.write(block)
            f.write(tail)

    return write


def docx_bomb(unpacked_bytes: int = 300 * MiB) -> bytes:
    """A valid Word document whose body is `unpacked_bytes` of paragraphs ("AAAA…"), deflated ~1000:1."""
    xml = files.docx_bytes([("p", "cover")])
    document = zipfile.ZipFile(io.BytesIO(xml)).read("word/document.xml").decode()
    head, rest = document.split("<w:body>")
    paragraph = ("<w:p><w:r><w:t>" + "A" * 20_000 + "</w:t></w:r></w:p>").encode()
    return _rebuild(
        xml,
        {
            "word/document.xml": _streamed(
                "word/document.xml",
                (head + "<w:body>").encode(),
                paragraph,
                unpacked_bytes,
                ("<w:sectPr/></w:body>" + rest.split("</w:body>")[1]).encode(),
            )
        },
    )


def xlsx_bomb(unpacked_bytes: int = 300 * MiB) -> bytes:
    """A valid workbook whose sheet is `unpacked_bytes` of rows of one long inline string each."""
    book = files.xlsx_bytes({"Sheet": [["h"], ["v"]]})
    sheet = zipfile.ZipFile(io.BytesIO(book)).read("xl/worksheets/sheet1.xml").decode()
    head, rest = sheet.split("<sheetData>")
    row = ('<row><c t="inlineStr"><is><t>' + "B" * 20_000 + "</t></is></c></row>").encode()
    return _rebuild(
        book,
        {
            "xl/worksheets/sheet1.xml": _streamed(
                "xl/worksheets/sheet1.xml",
                (head + "<sheetData>").encode(),
                row,
                unpacked_bytes,
                ("</sheetData>" + rest.split("</sheetData>")[1]).encode(),
            )
        },
    )


def lying_docx(unpacked_bytes: int = 300 * MiB, declared_bytes: int = 1000) -> bytes:
    """docx_bomb, but both headers of document.xml (local and central directory) declare `declared_bytes`."""
    data = bytearray(docx_bomb(unpacked_bytes))
    name = b"word/document.xml"
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = 0
        while (at := data.find(signature, at)) >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(name)] == name:
                data[at + size_at : at + size_at + 4] = struct.pack("<I", declared_bytes)
            at += 4
    return bytes(data)


def entity_docx() -> bytes:
    """A Word document whose body declares a billion-laughs DTD and uses its last entity (~3 GB once expanded)."""
    xml = files.docx_bytes([("p", "LAUGHS")])

    def write(original: bytes, archive: zipfile.ZipFile) -> None:
        text = original.decode()
        prolog_end = text.index("?>") + 2
        archive.writestr(
            "word/document.xml", text[:prolog_end] + BILLION_LAUGHS + text[prolog_end:].replace("LAUGHS", "&lol9;")
        )

    return _rebuild(xml, {"word/document.xml": write})


def padded_xlsx(columns: str = "XFD", rows: int = 1_048_576) -> bytes:
    """A 2 KB workbook whose sheet declares the dimension A1:<columns><rows> and has a cell there: openpyxl pads
    every row to that width (17 billion cells for XFD1048576)."""
    book = files.xlsx_bytes({"Sheet": [["h", "v"], ["a", 1]]})

    def write(original: bytes, archive: zipfile.ZipFile) -> None:
        corner = f"{columns}{rows}"
        text = original.decode().replace('<dimension ref="A1:B2"/>', f'<dimension ref="A1:{corner}"/>')
        text = text.replace(
            "</sheetData>", f'<row r="{rows}"><c r="{corner}" t="inlineStr"><is><t>x</t></is></c></row></sheetData>'
        )
        archive.writestr("xl/worksheets/sheet1.xml", text)

    return _rebuild(book, {"xl/worksheets/sheet1.xml": write})


def pdf_with_content(content_bytes: int, text: str = "hello") -> bytes:
    """A one-page PDF whose FlateDecode content stream shows `text`, then pads itself with spaces up to
    `content_bytes` once decompressed (a PDF bomb when that is large: 100 MB deflate to ~100 KB)."""
    import zlib

    show = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET\n".encode()
    packer = zlib.compressobj(9)
    stream = packer.compress(show)
    left = content_bytes - len(show)
    while left > 0:
        piece = min(left, MiB)
        stream += packer.compress(b" " * piece)
        left -= piece
    stream += packer.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
