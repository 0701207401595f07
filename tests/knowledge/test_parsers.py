"""Parsers on real files made here: text encodings, Markdown, HTML main text, PDF pages, Word headings and tables,
CSV/Excel row blocks with the header repeated, JSON records; broken and mislabelled files fail cleanly; hostile
files (zip bombs, lying zip headers, DTDs, PDF stream bombs, padded sheets) fail naming the limit they broke."""

from __future__ import annotations

import io
import math
import time
import zipfile

import pytest

from typecase.server.knowledge import parsers
from typecase.server.knowledge.chunking import Rule, chunk_sections
from typecase.server.knowledge.parsers import qa as qa_parser

from . import files, hostile

MiB = 1024 * 1024


def parse(tmp_path, name: str, data: bytes, rows_per_chunk: int = 20, chunk_size: int = 500):
    path = tmp_path / name
    path.write_bytes(data)
    fmt = parsers.detect(name)
    parsed = parsers.parse(path, fmt, parsers.Options(rows_per_chunk=rows_per_chunk))
    return parsed, list(chunk_sections(parsed.sections, Rule(chunk_size=chunk_size, chunk_overlap=0)))


def test_detect_by_extension_then_declared_type():
    assert parsers.detect("Report.PDF").name == "pdf"
    assert parsers.detect("notes", "text/markdown; charset=utf-8").name == "md"
    assert parsers.detect("photo.PNG").name == "png" and parsers.detect("deck.pptx").name == "pptx"
    for bad in ("setup.exe", "photo.gif", "archive.zip", "noext"):
        with pytest.raises(parsers.UnsupportedFileType):
            parsers.detect(bad)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
def test_text_encodings(tmp_path, encoding):
    text = "第一段：北京是中国的首都。\n\nSecond paragraph in English.\n"
    _, chunks = parse(tmp_path, "doc.txt", text.encode(encoding))
    assert chunks[0].text == text.strip()


def test_html_keeps_main_text_only(tmp_path):
    parsed, chunks = parse(
        tmp_path,
        "page.html",
        files.html_bytes(
            "Tea guide",
            "<h2>Brewing</h2><p>Steep green tea at <b>80 degrees</b> for two minutes.</p><ul><li>Use fresh water</li></ul>",
        ),
    )
    text = "\n".join(c.text for c in chunks)
    assert "# Tea guide" in text and "## Brewing" in text
    assert "Steep green tea at 80 degrees for two minutes." in text
    assert "Use fresh water" in text
    for noise in ("analytics-snippet", "Navigation menu", "Site header", "Copyright footer", "color: red"):
        assert noise not in text


def test_pdf_pages_are_kept(tmp_path):
    pages = [files.FILLER_EN * 3, "The launch code of project Zephyr is 7391. " + files.FILLER_EN, files.FILLER_EN]
    parsed, chunks = parse(tmp_path, "report.pdf", files.pdf_bytes(pages), chunk_size=40)
    assert parsed.page_count == 3
    planted = [c for c in chunks if "Zephyr" in c.text]
    assert planted and planted[0].page == 2
    assert {c.page for c in chunks} == {1, 2, 3}


def test_pdf_broken_or_encrypted_fails_with_a_reason(tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage that is no pdf at all")
    with pytest.raises(parsers.ParseError):
        parsed = parsers.parse(tmp_path / "broken.pdf", "pdf")
        list(parsed.sections)
    (tmp_path / "locked.pdf").write_bytes(files.encrypted_pdf_bytes())
    with pytest.raises(parsers.ParseError, match="encrypted"):
        parsers.parse(tmp_path / "locked.pdf", "pdf")
    (tmp_path / "fake.pdf").write_bytes(b"just some text pretending")
    with pytest.raises(parsers.UnsupportedFileType):
        parsers.parse(tmp_path / "fake.pdf", "pdf")


def test_docx_headings_and_tables(tmp_path):
    data = files.docx_bytes(
        [("h1", "Handbook"), ("p", "Welcome aboard."), ("h2", "休假制度"), ("p", "员工每年有十五天年假。")],
        table=[["Item", "Limit"], ["Laptop", "2000 EUR"]],
    )
    _, chunks = parse(tmp_path, "handbook.docx", data)
    text = chunks[0].text
    assert text.startswith("# Handbook")
    assert "## 休假制度\n\n员工每年有十五天年假。" in text
    assert "| Laptop | 2000 EUR |" in text


def test_csv_and_xlsx_repeat_the_header_every_n_rows(tmp_path):
    rows = [["city", "population"]] + [[f"city{i}", i * 1000] for i in range(45)]
    for name, data in (("t.csv", files.csv_bytes(rows, "gbk")), ("t.xlsx", files.xlsx_bytes({"Cities": rows}))):
        _, chunks = parse(tmp_path, name, data, rows_per_chunk=20)
        assert len(chunks) == 3, name
        for c in chunks:
            assert c.text.splitlines()[0] == "| city | population |"
        assert "| city44 | 44000 |" in chunks[2].text
        assert chunks[2].text.count("\n") == 2 + 5 - 1


def test_csv_with_chinese_in_gbk(tmp_path):
    rows = [["城市", "人口"], ["上海", "2487万"]]
    _, chunks = parse(tmp_path, "c.csv", files.csv_bytes(rows, "gbk"))
    assert "| 上海 | 2487万 |" in chunks[0].text


def test_json_records_and_documents(tmp_path):
    records = [{"id": i, "q": f"question {i}"} for i in range(5)]
    _, chunks = parse(tmp_path, "faq.json", files.json_bytes(records), rows_per_chunk=2)
    assert len(chunks) == 3 and '"question 4"' in chunks[2].text
    _, chunks = parse(tmp_path, "conf.json", b'{"name": "typecase", "nested": {"k": [1, 2]}}')
    assert '"name": "typecase"' in chunks[0].text
    with pytest.raises(parsers.ParseError):
        parse(tmp_path, "bad.json", b'{"unterminated": ')


def test_empty_and_binary_text(tmp_path):
    with pytest.raises(parsers.ParseError):
        parse(tmp_path, "empty.txt", b"   \n\n ")
    with pytest.raises(parsers.UnsupportedFileType):
        parse(tmp_path, "bin.txt", bytes(range(256)) * 4)


# -- hostile documents: every limit named when broken, and met exactly at its value --------------------------------


def limit_broken(tmp_path, name: str, data: bytes, **options) -> parsers.LimitExceeded:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(parsers.LimitExceeded) as failure:
        list(parsers.parse(path, parsers.detect(name), parsers.Options(**options)).sections)
    return failure.value


def parses(tmp_path, name: str, data: bytes, **options) -> list:
    path = tmp_path / name
    path.write_bytes(data)
    return list(parsers.parse(path, parsers.detect(name), parsers.Options(**options)).sections)


def unpacked_size(data: bytes) -> int:
    return sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist())


@pytest.mark.parametrize(
    ("name", "build", "options", "setting"),
    [
        (
            "declared.docx",
            lambda: hostile.docx_bomb(8 * MiB),
            {"zip_max_unpacked_bytes": 4 * MiB},
            "knowledge_zip_max_unpacked_bytes",
        ),
        (
            "declared.xlsx",
            lambda: hostile.xlsx_bomb(8 * MiB),
            {"zip_max_unpacked_bytes": 4 * MiB},
            "knowledge_zip_max_unpacked_bytes",
        ),
        ("ratio.docx", lambda: hostile.docx_bomb(8 * MiB), {}, "knowledge_zip_max_ratio"),
        (
            "lying.docx",
            lambda: hostile.lying_docx(8 * MiB),
            {"zip_max_unpacked_bytes": 4 * MiB},
            "knowledge_zip_max_unpacked_bytes",
        ),
        ("padded.xlsx", hostile.padded_xlsx, {}, "knowledge_xlsx_max_cells"),
        (
            "bomb.pdf",
            lambda: hostile.pdf_with_content(2 * MiB),
            {"pdf_max_stream_bytes": MiB},
            "knowledge_pdf_max_stream_bytes",
        ),
        (
            "pages.pdf",
            lambda: files.pdf_bytes(["one", "two", "three"]),
            {"pdf_max_pages": 2},
            "knowledge_pdf_max_pages",
        ),
        (
            "whole.html",
            lambda: files.html_bytes("t", "<p>" + "x" * 5000 + "</p>"),
            {"max_structured_bytes": 4096},
            "knowledge_max_structured_bytes",
        ),
    ],
)
def test_a_hostile_document_fails_naming_the_limit_it_broke(tmp_path, name, build, options, setting):
    failure = limit_broken(tmp_path, name, build(), **options)
    assert failure.setting == setting and setting in str(failure)


def test_zip_limits_hold_exactly_at_their_values(tmp_path):
    data = hostile.docx_bomb(2 * MiB)
    total = unpacked_size(data)
    entry = zipfile.ZipFile(io.BytesIO(data)).getinfo("word/document.xml")
    ratio = entry.file_size / entry.compress_size
    assert parses(tmp_path, "at.docx", data, zip_max_unpacked_bytes=total, zip_max_ratio=math.ceil(ratio))
    assert (
        limit_broken(
            tmp_path, "over.docx", data, zip_max_unpacked_bytes=total - 1, zip_max_ratio=math.ceil(ratio)
        ).setting
        == "knowledge_zip_max_unpacked_bytes"
    )
    assert (
        limit_broken(tmp_path, "ratio.docx", data, zip_max_ratio=math.floor(ratio)).setting == "knowledge_zip_max_ratio"
    )
    # Entries up to the grace size are not held to the ratio.
    assert parses(tmp_path, "grace.docx", data, zip_max_ratio=math.floor(ratio), zip_ratio_grace_bytes=entry.file_size)


def test_a_zip_entry_holding_other_than_it_declares_is_refused_even_under_the_limit(tmp_path):
    (tmp_path / "lying.docx").write_bytes(hostile.lying_docx(MiB, declared_bytes=1000))
    with pytest.raises(parsers.ParseError, match="header declares 1000"):
        parsers.parse(tmp_path / "lying.docx", "docx")


def test_office_xml_with_a_dtd_is_refused_before_any_entity_is_expanded(tmp_path):
    (tmp_path / "laughs.docx").write_bytes(hostile.entity_docx())
    with pytest.raises(parsers.ParseError, match="DTD") as failure:
        parsers.parse(tmp_path / "laughs.docx", "docx")
    assert not isinstance(failure.value, parsers.LimitExceeded)


def test_html_entities_declared_in_a_dtd_are_never_expanded(tmp_path):
    markup = f"{hostile.BILLION_LAUGHS}<html><body><p>&lol9;</p></body></html>".encode()
    sections = parses(tmp_path, "laughs.html", markup)
    assert sum(len(s.text) for s in sections) < 1000 and "lollol" not in sections[0].text


def test_office_packages_may_use_only_stored_or_deflate(tmp_path):
    source = zipfile.ZipFile(io.BytesIO(files.docx_bytes([("p", "packed with bzip2")])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_BZIP2) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info.filename))
    (tmp_path / "bzip2.docx").write_bytes(out.getvalue())
    with pytest.raises(parsers.ParseError, match="compression method 12"):
        parsers.parse(tmp_path / "bzip2.docx", "docx")


def test_pdf_and_xlsx_limits_hold_exactly_at_their_values(tmp_path):
    assert parses(tmp_path, "pages.pdf", files.pdf_bytes(["one", "two", "three"]), pdf_max_pages=3)
    content = 64 * 1024
    sections = parses(tmp_path, "stream.pdf", hostile.pdf_with_content(content), pdf_max_stream_bytes=content)
    assert "hello" in sections[0].text
    assert (
        limit_broken(
            tmp_path, "stream.pdf", hostile.pdf_with_content(content), pdf_max_stream_bytes=content - 1
        ).setting
        == "knowledge_pdf_max_stream_bytes"
    )
    cells = 26 * 100  # A1:Z100, every row padded to 26 cells
    assert parses(tmp_path, "cells.xlsx", hostile.padded_xlsx("Z", 100), xlsx_max_cells=cells)
    assert (
        limit_broken(tmp_path, "cells.xlsx", hostile.padded_xlsx("Z", 100), xlsx_max_cells=cells - 1).setting
        == "knowledge_xlsx_max_cells"
    )
    html = files.html_bytes("t", "<p>" + "x" * 5000 + "</p>")
    assert parses(tmp_path, "at.html", html, max_structured_bytes=len(html))


def test_a_long_html_page_is_parsed_in_linear_time(tmp_path):
    # Editing the tree node by node (bs4 finds a node's index by scanning its siblings) took 10 s of CPU for these
    # 8,000 paragraphs and over 300 s for 40,000; one walk takes a fraction of a second.
    page = files.html_bytes("Long", "".join(f"<p>Paragraph {i}. {files.FILLER_EN}</p>" for i in range(8000)))
    started = time.process_time()
    sections = parses(tmp_path, "long.html", page)
    assert time.process_time() - started < 5
    assert "Paragraph 7999." in sections[0].text and sections[0].text.count("\n\n") >= 8000


def test_tables_are_read_by_header_or_position_with_similar_questions_one_a_line(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('Category,问题,答案,相似问题\nhr,年假有几天?,十五天,"休假多少天\n假期天数"\n', encoding="utf-8")
    parsed = parsers.parse(path, "csv", parsers.Options(qa=True))
    [(q, similar, a)] = [qa_parser.decode(s.text) for s in parsed.sections]
    assert (q, similar, a) == ("年假有几天?", ["休假多少天", "假期天数"], "十五天")

    path.write_text("How tall is it?,Ten metres.,How high is it?,What is its height?\n", encoding="utf-8")
    [(q, similar, a)] = [
        qa_parser.decode(s.text) for s in parsers.parse(path, "csv", parsers.Options(qa=True)).sections
    ]
    assert (q, similar, a) == ("How tall is it?", ["How high is it?", "What is its height?"], "Ten metres.")

    path.write_text("".join(f"q{i}?,a{i}\n" for i in range(6)), encoding="utf-8")
    with pytest.raises(parsers.LimitExceeded) as err:
        list(parsers.parse(path, "csv", parsers.Options(qa=True, qa_max_pairs=5)).sections)
    assert err.value.setting == "knowledge_qa_max_pairs"
