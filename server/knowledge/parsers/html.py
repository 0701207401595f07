"""HTML: the main text (the <main>/<article> element when there is one), without scripts, styles, navigation,
headers, footers and forms; headings keep a Markdown '#' prefix, block elements become separate lines."""

from __future__ import annotations

import re
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import Options, Parsed, ParseError
from .text import decoded_blocks

_DROP = ("script", "style", "noscript", "template", "svg", "canvas", "nav", "header", "footer", "aside", "form",
         "iframe", "button", "select", "dialog")
_BLOCKS = ("p", "div", "section", "article", "main", "li", "tr", "br", "pre", "blockquote", "dd", "dt", "table",
           "ul", "ol", "figcaption", "h1", "h2", "h3", "h4", "h5", "h6")
_BLANKS = re.compile(r"\n{3,}")


def html_to_text(markup: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(_DROP):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.find(attrs={"role": "main"}) or soup.body or soup
    for level in range(1, 7):
        for h in root.find_all(f"h{level}"):
            h.insert(0, "#" * level + " ")
    for tag in root.find_all(["td", "th"]):
        tag.append(" | ")
    for tag in root.find_all(_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip(" |") for line in root.get_text().split("\n")]
    text = _BLANKS.sub("\n\n", "\n".join(lines)).strip()
    return title, text


def parse_html(path: Path, options: Options) -> Parsed:
    markup = "".join(text for text, _ in decoded_blocks(path, options.block_chars))
    try:
        title, text = html_to_text(markup)
    except Exception as exc:  # lxml/bs4 errors on broken markup
        raise ParseError(f"cannot parse HTML: {exc}") from exc
    if title and title not in text[: len(title) + 200]:
        text = f"# {title}\n\n{text}"
    if not text.strip():
        raise ParseError("the HTML page contains no text")
    return Parsed("html", iter([Section(text, progress=1.0)]), info={"title": title})
