"""Credentials out of log lines: every sink (stderr, the log history file, StreamLogs/ListLogs) passes its text
through `redact` first.

Written here rather than taken from a library: what must go is Typecase's own credential shapes (API keys,
`?access_token=`, bearer headers, JWTs) plus the common ones, in free text such as uvicorn's WebSocket access
line (`"WebSocket /v1/...?access_token=tc_..." [accepted]`); the PII scrubbers on PyPI look for other things.

Python's regex engine tries every alternative at every position, which cost ~0.3 µs per character for all the
shapes at once. So each shape names the substrings it cannot match without, and a line runs only the shapes whose
substrings it contains (one compiled pattern per combination, cached): a line with none, the common case, costs
a lower() and a few substring tests (~1 µs per 100 characters).
"""

from __future__ import annotations

import functools
import re

MASK = "[REDACTED]"

# URL query parameters whose value is a credential (`?key=` is Google's API key parameter).
_URL_PARAMS = (
    r"access[_-]?token|refresh[_-]?token|id[_-]?token|token|api[_-]?key|apikey|key|secret|"
    r"client[_-]?secret|password|passwd|signature|sig|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token"
)
# name=value in free text ("password=hunter2"); only names that cannot mean anything else.
_TEXT_PARAMS = r"access_token|refresh_token|api_key|apikey|password|passwd|client_secret"

# name: (substrings of the lower-cased line it needs, pattern whose first group is kept).
_SHAPES = {
    "url": (("=",), rf"([?&;](?:{_URL_PARAMS})=)[^&\s\"'#;,]+"),
    "text": (("=",), rf"(\b(?:{_TEXT_PARAMS})=)[^&\s\"',;]+"),
    "bearer": (("bearer",), r"(\bbearer\s+)[A-Za-z0-9._~+/=\-]{6,}"),
    "basic": (("basic",), r"(\bbasic\s+)[A-Za-z0-9+/=]{12,}"),
    "header": (
        ("api-key", "cookie"),
        r"(\b(?:x-api-key|api-key|x-goog-api-key|cookie|set-cookie)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+",
    ),
    "json": (
        ('token"', 'key"', 'secret"', 'password"'),
        r"(\"(?:[a-z_]*token|[a-z_]*api_?key|[a-z_]*secret|[a-z_]*password)\"\s*:\s*\")[^\"]+",
    ),
    "userinfo": (("@",), r"(://[^/\s:@]+:)[^/\s@]+(?=@)"),
    "apikey": (("tc_", "tc-", "sk_", "sk-"), r"(\b(?:tc|sk)[_-][A-Za-z0-9_\-]{5})[A-Za-z0-9_\-]{8,}"),
    "jwt": (("eyj",), r"()\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"),
}


# Any substring any shape needs: most lines have none and are done after one search.
_NEEDED = [n for needs, _ in _SHAPES.values() for n in needs]
_ANY_NEEDED = re.compile("|".join(map(re.escape, _NEEDED)))
_ANY_NEEDED_BYTES = re.compile(b"|".join(re.escape(n.encode()) for n in _NEEDED))


def may_hold_credentials(text: str | bytes) -> bool:
    """False when `text` certainly holds nothing redact() would mask (a cheap test for whole records)."""
    if isinstance(text, bytes):
        return _ANY_NEEDED_BYTES.search(text.lower()) is not None
    return _ANY_NEEDED.search(text.lower()) is not None


@functools.cache
def _pattern(shapes: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(_SHAPES[name][1] for name in shapes), re.IGNORECASE)


def _mask(match: re.Match) -> str:
    kept = next((g for g in match.groups() if g is not None), "")
    return kept + MASK


def redact(text: str) -> str:
    """`text` with every credential replaced by [REDACTED] (an API key keeps the prefix lists show)."""
    if not text:
        return text
    low = text.lower()
    if _ANY_NEEDED.search(low) is None:
        return text
    shapes = tuple(name for name, (needs, _) in _SHAPES.items() if any(n in low for n in needs))
    return _pattern(shapes).sub(_mask, text) if shapes else text
