"""Real documents made by the tests: PDF (fpdf2), Word (python-docx), Excel (openpyxl), CSV, HTML, Markdown, JSON,
Chinese and English text. Each plants a fact that a search must find."""

from __future__ import annotations

import csv
import io
import json

FILLER_EN = (
    "Quarterly planning notes cover budgets, hiring plans, office moves and the vendor review. "
    "The team discussed travel policy, onboarding checklists and the support rotation at length. "
)
FILLER_ZH = "本季度的工作计划包括预算安排、人员招聘、办公室搬迁以及供应商评审。团队还讨论了差旅制度和新人培训。"


def pdf_bytes(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def encrypted_pdf_bytes() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["secret page"]))))
    writer.encrypt(user_password="open-sesame", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(blocks: list[tuple[str, str]], table: list[list[str]] | None = None) -> bytes:
    """blocks: ("h1"|"h2"|"p", text)."""
    import docx

    document = docx.Document()
    for kind, text in blocks:
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1:]))
        else:
            document.add_paragraph(text)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx_bytes(sheets: dict[str, list[list]]) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def csv_bytes(rows: list[list], encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode(encoding)


def html_bytes(title: str, main: str) -> bytes:
    return f"""<!doctype html><html><head><title>{title}</title><style>body {{ color: red }}</style>
<script>var tracking = "analytics-snippet-should-not-be-indexed";</script></head>
<body><nav><a href="/">Home</a> | <a href="/about">Navigation menu item</a></nav>
<header>Site header banner</header>
<main><h1>{title}</h1>{main}</main>
<footer>Copyright footer text</footer></body></html>""".encode()


def json_bytes(records: list[dict]) -> bytes:
    return json.dumps(records, ensure_ascii=False).encode()


def long_english(paragraphs: int, planted: str = "", at: int = -1) -> str:
    out = []
    for i in range(paragraphs):
        out.append(f"Section {i}. " + FILLER_EN * 2)
        if i == at:
            out.append(planted)
    return "\n\n".join(out)
