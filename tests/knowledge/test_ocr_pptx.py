"""OCR (png, jpg, scanned PDFs) and PowerPoint decks through the real App (issue 23 item 3): images rendered here
with Pillow are uploaded, read by RapidOCR inside the parse process, and found by keyword search; slides keep their
numbers as pages; a broken or oversized image fails its file with the reason."""

from __future__ import annotations

import io
import subprocess

import pytest

from tests.conftest import ADMIN_KEY
from typecase.v1 import knowledge_pb2 as pb
from typecase.v1 import knowledge_pb2_grpc

from .support import bearer, create_kb, file_reason, search, upload, wait_done

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = bearer(ADMIN_KEY)
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def cjk_font() -> str | None:
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    paths = sorted(line.split(":")[0] for line in out.splitlines() if "Sans" in line and "Regular" in line)
    return paths[0] if paths else None


def render(lines: list[str], font_path: str, fmt: str = "PNG", size: int = 28) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, size)
    width = int(max(font.getlength(line) for line in lines)) + 60
    image = Image.new("RGB", (width, 50 + 48 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 25 + 48 * i), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def deck(slides: list[tuple[str, str, str]]) -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    for title, body, notes in slides:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        table = slide.shapes.add_table(2, 2, Inches(1), Inches(5), Inches(4), Inches(1)).table
        table.cell(0, 0).text, table.cell(0, 1).text = "metric", "value"
        table.cell(1, 0).text, table.cell(1, 1).text = f"{title} score", "42"
        slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def stub(kchannel):
    return knowledge_pb2_grpc.KnowledgeServiceStub(kchannel)


async def ingest(stub, kb_id: str, name: str, data: bytes) -> pb.KnowledgeFile:
    file = await upload(stub, ADMIN, kb_id, name, data)
    return await wait_done(stub, ADMIN, file.id, timeout=300)


async def test_text_in_png_jpg_and_a_scanned_pdf_is_found_by_keyword_search(stub):
    # Small chunks, so that each scanned page is its own chunk and its page number can be checked.
    kb = await create_kb(stub, ADMIN, "ocr", chunking_rule=pb.ChunkingRule(chunk_size=24, chunk_overlap=0))
    png = render(["Quarterly inventory report", "The vault combination for project Kestrel is 4471-ZETA."], LATIN_FONT)
    jpg = render(
        ["Field notes from the northern station", "Snow petrels were counted near Mawson ridge."], LATIN_FONT, "JPEG"
    )
    # A scanned PDF: pages that are only images (Pillow writes each image as a page, with no text layer).
    from PIL import Image

    pages = [
        Image.open(io.BytesIO(render([f"Scanned page {n} of the maintenance log", line], LATIN_FONT)))
        for n, line in (
            (1, "Replace the turbine filter every ninety days."),
            (2, "The backup generator runs on biodiesel from Orkney."),
        )
    ]
    scanned = io.BytesIO()
    pages[0].save(scanned, "PDF", save_all=True, append_images=pages[1:])
    for name, data in (("report.png", png), ("notes.jpg", jpg), ("scan.pdf", scanned.getvalue())):
        done = await ingest(stub, kb.id, name, data)
        assert done.status == pb.FILE_STATUS_DONE, (name, done.error.message)

    [hit] = await search(stub, ADMIN, [kb.id], "Kestrel vault combination", mode=pb.SEARCH_MODE_KEYWORD, top_k=1)
    assert hit.file_name == "report.png" and "4471-ZETA" in hit.text and hit.page == 1
    [hit] = await search(stub, ADMIN, [kb.id], "snow petrels Mawson", mode=pb.SEARCH_MODE_KEYWORD, top_k=1)
    assert hit.file_name == "notes.jpg"
    [hit] = await search(stub, ADMIN, [kb.id], "backup generator Orkney", mode=pb.SEARCH_MODE_KEYWORD, top_k=1)
    assert hit.file_name == "scan.pdf" and hit.page == 2 and "Orkney" in hit.text
    scan = next(
        f
        for f in (await stub.ListFiles(pb.ListFilesRequest(kb_id=kb.id), metadata=ADMIN)).files
        if f.name == "scan.pdf"
    )
    assert scan.page_count == 2


async def test_chinese_text_in_an_image_is_found_by_keyword_search(stub):
    font = cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    kb = await create_kb(stub, ADMIN, "ocr-zh")
    done = await ingest(stub, kb.id, "仓库.png", render(["鹭岛项目的仓库密码是青石七二九。"], font))
    assert done.status == pb.FILE_STATUS_DONE, done.error.message
    [hit] = await search(stub, ADMIN, [kb.id], "仓库密码", mode=pb.SEARCH_MODE_KEYWORD, top_k=1)
    assert "青石七二九" in hit.text


async def test_slides_are_pages_with_titles_tables_and_notes(stub):
    kb = await create_kb(stub, ADMIN, "pptx", chunking_rule=pb.ChunkingRule(chunk_size=40, chunk_overlap=0))
    data = deck(
        [
            ("Roadmap", "Ship the harbour crane firmware in May.", "Mention the supplier delay."),
            ("Budget", "Travel is capped at nine thousand euros.", "Finance signs off in June."),
        ]
    )
    done = await ingest(stub, kb.id, "plan.pptx", data)
    assert done.status == pb.FILE_STATUS_DONE and done.page_count == 2, done.error.message
    [hit] = await search(stub, ADMIN, [kb.id], "travel capped euros", mode=pb.SEARCH_MODE_KEYWORD, top_k=1)
    assert hit.page == 2 and hit.text.startswith("# Budget") and "Finance signs off" in hit.text
    assert "Budget score | 42" in hit.text


async def test_a_broken_or_oversized_image_fails_its_file_with_the_reason(kapp, stub):
    kb = await create_kb(stub, ADMIN, "ocr-bad")
    broken = await ingest(stub, kb.id, "broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    assert broken.status == pb.FILE_STATUS_FAILED and file_reason(broken) == "PARSE_FAILED"
    assert "cannot read the image" in broken.error.message
    from PIL import Image

    huge = io.BytesIO()
    Image.new("1", (9000, 5000)).save(huge, "PNG")  # 45 Mpx in a few kilobytes
    big = await ingest(stub, kb.id, "huge.png", huge.getvalue())
    assert big.status == pb.FILE_STATUS_FAILED and "knowledge_ocr_max_pixels" in big.error.message
    mislabelled = await upload(stub, ADMIN, kb.id, "fake.jpg", b"not an image at all" * 10)
    failed = await wait_done(stub, ADMIN, mislabelled.id)
    assert failed.status == pb.FILE_STATUS_FAILED and file_reason(failed) == "UNSUPPORTED_FILE_TYPE"
