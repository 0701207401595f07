"""Credentials out of log lines: every sink (stderr, the log history file, StreamLogs/ListLogs) passes its text
through `redact` first.

Written here rather than taken from a library: what must go is Typecase's own credential shapes (API keys,
`?access_token=`, bearer headers, JWTs) plus the common ones, in free text such as uvicorn's WebSocket access
line (`"WebSocket /v1/...?access_token=tc_..." [accepted]`), and the PII scrubbers on PyPI look for other things.
One compiled pattern; a line without credentials costs one scan (about 1 µs per 100 characters).
"""

from __future__ import annotations

import re

MASK = "[REDACTED]"

# URL query parameters whose value is a credential (`?key=` is Google's API key parameter).
_URL_PARAMS = (r"access[_-]?token|refresh[_-]?token|id[_-]?token|token|api[_-]?key|apikey|key|secret|"
               r"client[_-]?secret|password|passwd|signature|sig|x-amz-signature|x-amz-credential|"
               r"x-amz-security-token")
# name=value in free text ("password=hunter2"); only names that cannot mean anything else.
_TEXT_PARAMS = r"access_token|refresh_token|api_key|apikey|password|passwd|client_secret"
_PATTERN = re.compile(
    rf"(?P<url>[?&;](?:{_URL_PARAMS})=)[^&\s\"'#;,]+"
    rf"|(?P<text>\b(?:{_TEXT_PARAMS})=)[^&\s\"',;]+"
    r"|(?P<bearer>\bbearer\s+)[A-Za-z0-9._~+/=\-]{6,}"
    r"|(?P<basic>\bbasic\s+)[A-Za-z0-9+/=]{12,}"
    r"|(?P<header>\b(?:x-api-key|api-key|x-goog-api-key|cookie|set-cookie)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"
    r"|(?P<json>\"(?:[a-z_]*token|[a-z_]*api_?key|[a-z_]*secret|[a-z_]*password)\"\s*:\s*\")[^\"]+"
    r"|(?P<userinfo>://[^/\s:@]+:)[^/\s@]+(?=@)"
    r"|(?P<apikey>\b(?:tc|sk)[_-][A-Za-z0-9_\-]{5})[A-Za-z0-9_\-]{8,}"
    r"|\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
    re.IGNORECASE,
)


def _mask(match: re.Match) -> str:
    kept = next((g for g in match.groups() if g is not None), "")
    return kept + MASK


def redact(text: str) -> str:
    """`text` with every credential replaced by [REDACTED] (an API key keeps the prefix lists show)."""
    return _PATTERN.sub(_mask, text) if text else text
