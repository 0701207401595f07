"""HTML: the main text (the <main>/<article> element when there is one), without scripts, styles, navigation,
headers, footers and forms; headings keep a Markdown '#' prefix, block elements become separate lines."""

from __future__ import annotations

import re
from pathlib import Path

from typecase.server.knowledge.chunking import Section

from . import Options, Parsed, ParseError
from .text import decoded_blocks

_DROP = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "iframe",
    "button",
    "select",
    "dialog",
)
_BLOCKS = (
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "tr",
    "br",
    "pre",
    "blockquote",
    "dd",
    "dt",
    "table",
    "ul",
    "ol",
    "figcaption",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLANKS = re.compile(r"\n{3,}")


def html_to_text(markup: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup, Tag

    soup = BeautifulSoup(markup, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""

    def kept(tag: Tag) -> bool:
        return tag.name not in _DROP and not any(parent.name in _DROP for parent in tag.parents)

    root = (
        next((t for t in soup.find_all("main") if kept(t)), None)
        or next((t for t in soup.find_all("article") if kept(t)), None)
        or next((t for t in soup.find_all(None, {"role": "main"}) if kept(t)), None)
        or soup.body
        or soup
    )
    # One walk over the tree. Editing it instead (bs4's insert_before/decompose find a node's index by a linear
    # scan of its siblings) was quadratic: 10 s for a 1.5 MB page of paragraphs, over 300 s for 8 MB (measured).
    strings = root.interesting_string_types or ()  # what root.get_text() would keep: no comments, doctypes, ...
    out: list[str] = []
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if isinstance(node, Tag):
            name = node.name if node is not root else ""  # the root's own tag adds nothing
            if leaving:
                out.append(" | " if name in ("td", "th") else "")
                out.append("\n" if name in _BLOCKS else "")
                continue
            if name in _DROP:
                continue
            out.append("\n" if name in _BLOCKS else "")
            if name in _HEADINGS:
                out.append("#" * _HEADINGS[name] + " ")
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.contents))
        elif type(node) in strings:
            out.append(str(node))
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip(" |") for line in "".join(out).split("\n")]
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
