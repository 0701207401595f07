"""Chunking, by Bisheng's rules: a list of separator regexes tried in order, each keeping its match with the text
before it (rule "after", the default) or after it (rule "before"); pieces shorter than chunk_size are merged up to
chunk_size with chunk_overlap tokens carried over, longer pieces are split again with the next separators.

Differences from Bisheng, on purpose:
- sizes are in tokens, counted CJK-aware (each CJK character is a token, a run of other letters/digits is one, each
  punctuation mark is one), not characters, so Chinese and English chunks carry comparable amounts of text;
- a piece still longer than chunk_size when no separator is left is cut on token boundaries (never inside an
  English word), so chunk_size is a real maximum;
- long documents are chunked in windows cut at paragraph boundaries, so memory stays bounded on huge files;
- separators are RE2 patterns (infra/user_regex.py): Python's `re` took seconds on a separator like `(a+)+$`, and
  holds the GIL while it matches, so a preview stalled the whole server. RE2 is linear in the text, but its NFA
  fallback costs up to ~15 ns per byte per instruction, so a separator compiles to at most
  MAX_SEPARATOR_INSTRUCTIONS (the longest of twenty real ones measured 38) and a window's splitting stops with
  SplitTooSlow past WINDOW_SPLIT_SECONDS, checked between matches: one match call over a 256K-character window
  then costs at most ~1.5 s, and a legitimate window takes ~30 ms.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc

from typecase.server.infra import user_regex
from typecase.server.rpc.errors import TypecaseError

# The default separators: paragraphs, lines, Chinese full stops, then English sentence ends (a literal period).
DEFAULT_SEPARATORS: tuple[str, ...] = ("\n\n", "\n", "。", r"\.")
MAX_SEPARATORS = 32
MAX_SEPARATOR_CHARS = 128
MAX_SEPARATOR_INSTRUCTIONS = 128
WINDOW_SPLIT_SECONDS = 10.0

_CJK = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0002fa1f"
)
TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_SPACES_RE = re.compile(r"[\t\f\v\r\x20\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]{2,}")
_TRAILING_SPACES_RE = re.compile(r"[\t\f\v\r\x20\u00a0\u3000]+\n")
_BLANK_LINES_RE = re.compile(r"\n[\t\f\v\r\x20\u00a0\u3000]*(?:\n[\t\f\v\r\x20\u00a0\u3000]*)+")
_URL_RE = re.compile(r"(?:https?|ftp)://[^\s<>\"'）)\]]+|www\.[^\s<>\"'）)\]]+", re.IGNORECASE)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))


class RuleError(ValueError):
    """A chunking rule that cannot be used; `field` names the offending field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SplitTooSlow(RuleError, TypecaseError):
    """The separators took longer than WINDOW_SPLIT_SECONDS on one window of text: a RuleError for ingestion, and
    INVALID_ARGUMENT on chunking_rule.separators for a preview."""

    def __init__(self, seconds: float):
        problem = (
            f"splitting one window of text took longer than {seconds:g}s: the separators are too slow on "
            "this text (simplify them)"
        )
        RuleError.__init__(self, "separators", problem)
        TypecaseError.__init__(
            self,
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            f"chunking_rule.separators: {problem}",
            {"field": "chunking_rule.separators"},
        )


@dataclass(frozen=True)
class Rule:
    separators: tuple[str, ...] = DEFAULT_SEPARATORS
    separator_before: bool = False
    chunk_size: int = 500
    chunk_overlap: int = 50
    normalize_whitespace: bool = False
    remove_urls_emails: bool = False

    def validate(self, max_chunk_size: int = 8000) -> Rule:
        if not 1 <= self.chunk_size <= max_chunk_size:
            raise RuleError("chunk_size", f"must be 1 to {max_chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise RuleError("chunk_overlap", "must be at least 0 and less than chunk_size")
        if len(self.separators) > MAX_SEPARATORS:
            raise RuleError("separators", f"at most {MAX_SEPARATORS}")
        for sep in self.separators:
            if not sep or len(sep) > MAX_SEPARATOR_CHARS:
                raise RuleError("separators", f"each must be 1 to {MAX_SEPARATOR_CHARS} characters")
            try:
                user_regex.check(sep, MAX_SEPARATOR_INSTRUCTIONS)
            except user_regex.PatternError as exc:
                raise RuleError("separators", f"{sep!r}: {exc}") from None
        return self

    def to_dict(self) -> dict:
        return {
            "separators": list(self.separators),
            "separator_rule": "before" if self.separator_before else "after",
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "normalize_whitespace": self.normalize_whitespace,
            "remove_urls_emails": self.remove_urls_emails,
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> Rule:
        data = data or {}
        return cls(
            separators=tuple(data.get("separators") or DEFAULT_SEPARATORS),
            separator_before=data.get("separator_rule") == "before",
            chunk_size=int(data.get("chunk_size") or 500),
            chunk_overlap=int(data.get("chunk_overlap", 50)),
            normalize_whitespace=bool(data.get("normalize_whitespace")),
            remove_urls_emails=bool(data.get("remove_urls_emails")),
        )


def preprocess(text: str, rule: Rule) -> str:
    if rule.remove_urls_emails:
        text = _EMAIL_RE.sub("", _URL_RE.sub("", text))
    if rule.normalize_whitespace:
        text = _BLANK_LINES_RE.sub("\n\n", _TRAILING_SPACES_RE.sub("\n", _SPACES_RE.sub(" ", text)))
    return text


class Splitter:
    """Splits one text into chunk spans (start, end offsets, whitespace-trimmed)."""

    def __init__(self, rule: Rule, window_seconds: float = WINDOW_SPLIT_SECONDS):
        self.rule = rule
        self.patterns = [user_regex.compile(s) for s in rule.separators]
        self.window_seconds = window_seconds
        self._deadline = 0.0

    def split(self, text: str) -> list[tuple[int, int]]:
        self._deadline = time.monotonic() + self.window_seconds
        spans = [_trim(text, s, e) for s, e in self._split(text, 0, len(text), 0)]
        return [(s, e) for s, e in spans if e > s]

    def _in_time(self) -> None:
        if time.monotonic() > self._deadline:
            raise SplitTooSlow(self.window_seconds)

    def _split(self, text: str, start: int, end: int, level: int) -> list[tuple[int, int]]:
        chosen = None
        for i in range(level, len(self.patterns)):
            self._in_time()
            # RE2 is given the span itself: with (text, start, end) it would encode all of `text` on every call.
            if self.patterns[i].search(text[start:end]):
                chosen = i
                break
        if chosen is None:
            return self._hard_split(text, start, end)
        size = self.rule.chunk_size
        out: list[tuple[int, int]] = []
        good: list[tuple[int, int, int]] = []
        for s, e in self._pieces(text, start, end, self.patterns[chosen]):
            n = count_tokens(text[s:e])
            if n < size:
                good.append((s, e, n))
                continue
            if good:
                out.extend(self._merge(good))
                good = []
            if chosen + 1 < len(self.patterns):
                out.extend(self._split(text, s, e, chosen + 1))
            else:
                out.extend(self._hard_split(text, s, e))
        if good:
            out.extend(self._merge(good))
        return out

    def _pieces(self, text: str, start: int, end: int, pattern) -> list[tuple[int, int]]:
        """Contiguous pieces covering [start, end), cut at every match (kept before or after the cut)."""
        cuts: list[int] = []
        for m in pattern.finditer(text[start:end]):
            self._in_time()
            cut = start + (m.start() if (self.rule.separator_before or m.start() == m.end()) else m.end())
            if start < cut < end and (not cuts or cut > cuts[-1]):
                cuts.append(cut)
        bounds = [start, *cuts, end]
        return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i]]

    def _merge(self, pieces: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
        size, overlap = self.rule.chunk_size, self.rule.chunk_overlap
        docs: list[tuple[int, int]] = []
        current: list[tuple[int, int, int]] = []
        total = 0
        for piece in pieces:
            n = piece[2]
            if current and total + n > size:
                docs.append((current[0][0], current[-1][1]))
                while current and (total > overlap or total + n > size):
                    total -= current.pop(0)[2]
            current.append(piece)
            total += n
        if current:
            docs.append((current[0][0], current[-1][1]))
        return docs

    def _hard_split(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        tokens = [(m.start(), m.end()) for m in TOKEN_RE.finditer(text, start, end)]
        size, step = self.rule.chunk_size, self.rule.chunk_size - self.rule.chunk_overlap
        if len(tokens) <= size:
            return [(start, end)]
        out = []
        for i in range(0, len(tokens), step):
            j = min(i + size, len(tokens))
            out.append((tokens[i][0], tokens[j - 1][1]))
            if j == len(tokens):
                break
        return out


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


@dataclass
class Section:
    """A piece of parsed document. `atomic` sections (table blocks) become one chunk each, never merged or split.
    `progress` is the fraction of the source consumed once this section was read, when the parser knows it."""

    text: str
    page: int = 0
    atomic: bool = False
    progress: float | None = None


@dataclass
class Chunk:
    index: int
    text: str
    page: int
    token_count: int
    start: int = 0  # character offsets in the document's extracted text (sections joined as chunked)
    end: int = 0


@dataclass
class _Window:
    text: str = ""
    pages: list[tuple[int, int]] = field(default_factory=list)  # (offset, page) where each page starts


def chunk_sections(
    sections: Iterable[Section], rule: Rule, window_chars: int = 256 * 1024, progress: list[float] | None = None
) -> Iterator[Chunk]:
    """Chunks of a document given as sections, streamed: at most about two windows of text are held at once.

    Text sections are concatenated (a newline between sections that do not end with one) and chunked per window;
    each window is cut at the last paragraph (else line, else space) boundary of its second half. `progress`, when
    given, gets the parser's latest progress fraction appended as sections are consumed.
    """
    splitter = Splitter(rule)
    index = 0
    base = 0  # offset of the current window's first character in the whole extracted text
    win = _Window()

    def emit(text: str, pages: list[tuple[int, int]]) -> Iterator[Chunk]:
        nonlocal index, base
        offsets = [p[0] for p in pages]
        for s, e in splitter.split(text):
            page = pages[bisect.bisect_right(offsets, s) - 1][1] if pages else 0
            piece = text[s:e]
            yield Chunk(index, piece, page, count_tokens(piece), base + s, base + e)
            index += 1
        base += len(text)

    def cut_point(text: str) -> int:
        lo = len(text) // 2
        for sep in ("\n\n", "\n", " ", "\u3002"):
            at = text.rfind(sep, lo, window_chars)
            if at > 0:
                return at + len(sep)
        return window_chars

    for section in sections:
        if progress is not None and section.progress is not None:
            progress.append(section.progress)
        if section.atomic:
            if win.text:
                yield from emit(win.text, win.pages)
                win = _Window()
            raw = preprocess(section.text, rule)
            text = raw.strip()
            if text:
                start = base + raw.find(text[0])
                yield Chunk(index, text, section.page, count_tokens(text), start, start + len(text))
                index += 1
            base += len(raw)
            continue
        text = preprocess(section.text, rule)
        if not text:
            continue
        if win.text and not win.text.endswith("\n"):
            win.text += "\n"
        if not win.pages or win.pages[-1][1] != section.page:
            win.pages.append((len(win.text), section.page))
        win.text += text
        while len(win.text) > window_chars:
            cut = cut_point(win.text)
            head, tail = win.text[:cut], win.text[cut:]
            head_pages = [p for p in win.pages if p[0] < cut] or [(0, section.page)]
            tail_pages = [(0, head_pages[-1][1])] + [(o - cut, pg) for o, pg in win.pages if o >= cut]
            if len(tail_pages) > 1 and tail_pages[1][0] == 0:
                tail_pages = tail_pages[1:]
            yield from emit(head, head_pages)
            win = _Window(tail, tail_pages)
    if win.text:
        yield from emit(win.text, win.pages)
