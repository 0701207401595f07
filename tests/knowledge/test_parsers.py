"""Parsers on real files made here: text encodings, Markdown, HTML main text, PDF pages, Word headings and tables,
CSV/Excel row blocks with the header repeated, JSON records; broken and mislabelled files fail cleanly."""

from __future__ import annotations

import pytest

from typecase.server.knowledge import parsers
from typecase.server.knowledge.chunking import Rule, chunk_sections

from . import files


def parse(tmp_path, name: str, data: bytes, rows_per_chunk: int = 20, chunk_size: int = 500):
    path = tmp_path / name
    path.write_bytes(data)
    fmt = parsers.detect(name)
    parsed = parsers.parse(path, fmt, parsers.Options(rows_per_chunk=rows_per_chunk))
    return parsed, list(chunk_sections(parsed.sections, Rule(chunk_size=chunk_size, chunk_overlap=0)))


def test_detect_by_extension_then_declared_type():
    assert parsers.detect("Report.PDF").name == "pdf"
    assert parsers.detect("notes", "text/markdown; charset=utf-8").name == "md"
    for bad in ("setup.exe", "photo.png", "archive.zip", "noext"):
        with pytest.raises(parsers.UnsupportedFileType):
            parsers.detect(bad)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
def test_text_encodings(tmp_path, encoding):
    text = "第一段：北京是中国的首都。\n\nSecond paragraph in English.\n"
    _, chunks = parse(tmp_path, "doc.txt", text.encode(encoding))
    assert chunks[0].text == text.strip()


def test_html_keeps_main_text_only(tmp_path):
    parsed, chunks = parse(tmp_path, "page.html", files.html_bytes(
        "Tea guide", "<h2>Brewing</h2><p>Steep green tea at <b>80 degrees</b> for two minutes.</p><ul><li>Use fresh water</li></ul>"))
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
