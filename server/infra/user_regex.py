"""Regular expressions that users write (flow conditions, knowledge chunking separators), compiled with RE2.

Python's `re` backtracks: `^(a+)+$` against 25 characters took 2.7 s and doubled with each character, holding the
event loop (and, in a thread, the GIL) the whole time. The `regex` module's safeguards catch that pattern but not
`^(a|aa)+$` (0.5 s at 30 characters), and its compiler is itself exponential in nested counts
(`(?:(?:(?:(?:a{50}){50}){50}){50})`: 3.7 s to compile, GIL held). RE2 (google-re2) matches in time linear in
the text (`^(a+)+$` against 100,000 characters: 0.4 ms) and releases the GIL while it matches.

Linear is not small, though. When a pattern defeats RE2's DFA it falls back to an NFA that costs up to ~15 ns per
byte per program instruction: `(?:[ab]{0,40}a){1,20}x` (1,644 instructions) took 13.5 s over 1 MB. So callers
bound the rest: flow conditions match in worker processes killed at a deadline (flow/workers.py); chunking caps
a separator's program size and checks a deadline between matches (knowledge/chunking.py). Compiling is bounded
here: a pattern must fit in CHECK_MEMORY_BYTES (worst compile measured 3 ms; RE2's own default of 8 MiB let one
take 270 ms with the GIL held); it is then compiled again with MATCH_MEMORY_BYTES, which leaves its DFA room.
A plain literal (most separators) is matched by `re`, which cannot backtrack on one: see compile().

The price is RE2's syntax, and these are refused with a message that says so: lookahead and lookbehind ((?=, (?!,
(?<=, (?<!), backreferences (\\1, (?P=name)), possessive quantifiers, atomic groups and conditionals. \\w, \\d, \\s
and \\b are ASCII-only (spelling them for Unicode, as `re` means them, made `\\w{20}` cost 14 ms to compile): use
\\p{L}, \\p{N}, \\p{Han} or a range such as [\\x{4e00}-\\x{9fff}]. Python's \\Z and \\uXXXX are translated.
"""

from __future__ import annotations

import functools
import re

import re2

CHECK_MEMORY_BYTES = 256 << 10
MATCH_MEMORY_BYTES = 8 << 20

_EXPLAINED = (
    ("(?=", "lookahead (?=...) is not supported"),
    ("(?!", "negative lookahead (?!...) is not supported"),
    ("(?<=", "lookbehind (?<=...) is not supported"),
    ("(?<!", "negative lookbehind (?<!...) is not supported"),
    ("(?>", "atomic groups (?>...) are not supported"),
    ("(?(", "conditionals (?(...)...) are not supported"),
    ("(?P=", "backreferences (?P=name) are not supported"),
)
_SYNTAX = "patterns use RE2 syntax, which matches in linear time"
# Characters that stand for themselves, and escaped metacharacters, \n and \t: nothing that repeats or branches.
_LITERAL = re.compile(r"(?:[^.^$*+?{}\[\]|()\\]|\\[.^$*+?{}\[\]|()\\/\-nt])+\Z")
# \Z, \uXXXX and \UXXXXXXXX in Python's spelling (an escaped backslash before them is left alone).
_PYTHON_ESCAPE = re.compile(r"\\(?:(\\)|(Z)|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8}))")


class PatternError(ValueError):
    """A pattern that cannot be used; the message says why in a person's terms."""


def check(pattern: str, max_program_size: int | None = None) -> None:
    """Raise PatternError unless the pattern compiles (and, when given, to at most max_program_size
    instructions). Cached, failures included, so a repeated bad pattern costs nothing."""
    checked = _checked(pattern)
    if isinstance(checked, str):
        raise PatternError(checked)
    if max_program_size is not None and checked.programsize > max_program_size:
        raise PatternError(
            f"the pattern is too complex: {checked.programsize} instructions compiled, at most {max_program_size}"
        )


def compile(pattern: str) -> re2._Regexp | re.Pattern[str]:  # noqa: A001 (re's name, on purpose)
    r"""The pattern compiled for matching, or PatternError. A plain literal (`\n\n`, `。`, `\.`: most separators)
    is matched by `re`, which cannot backtrack on one and avoids the ~15 µs that each call through RE2's Python
    wrapper costs (chunking with the default separators: 1.3x to 2.5x slower through RE2); anything else by RE2,
    whose DFA may grow to MATCH_MEMORY_BYTES."""
    check(pattern)
    if _LITERAL.match(pattern):
        return _literal(pattern)
    return _for_matching(_PYTHON_ESCAPE.sub(_translate, pattern))


@functools.lru_cache(maxsize=256)
def _literal(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@functools.lru_cache(maxsize=1024)
def _checked(pattern: str) -> re2._Regexp | str:
    try:
        return re2.compile(_PYTHON_ESCAPE.sub(_translate, pattern), _options(CHECK_MEMORY_BYTES))
    except re2.error as exc:
        return _explain(pattern, exc)


@functools.lru_cache(maxsize=64)  # each may hold up to MATCH_MEMORY_BYTES of DFA states
def _for_matching(translated: str) -> re2._Regexp:
    return re2.compile(translated, _options(MATCH_MEMORY_BYTES))


def _options(max_mem: int) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = max_mem
    return options


def _translate(match: re.Match) -> str:
    escaped_backslash, end, short, long = match.groups()
    if escaped_backslash:
        return match.group(0)
    if end:
        return r"\z"
    return "\\x{" + (short or long) + "}"


def _explain(pattern: str, exc: re2.error) -> str:
    detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    for marker, why in _EXPLAINED:
        if marker in pattern:
            return f"{why}: {_SYNTAX}"
    operator = detail.rsplit(": ", 1)[-1]
    if detail.startswith("invalid escape sequence") and operator[1:].isdigit():
        return f"backreferences ({operator}) are not supported: {_SYNTAX}"
    if detail.startswith("bad repetition operator") and operator.endswith("+"):
        return f"possessive quantifiers ({operator}) are not supported: {_SYNTAX}"
    if "repetition" in detail:
        return f"{detail}: repetition counts, nested ones multiplied, are at most 1000"
    if "pattern too large" in detail:
        return f"the pattern is too large: it needs more than {CHECK_MEMORY_BYTES} bytes compiled"
    return f"not a valid regular expression: {detail}"
