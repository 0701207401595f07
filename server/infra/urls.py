"""URL helpers shared by the adapters: secrets never reach logs, reprs or health details."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_url(url: str | None) -> str:
    """Return `url` with any password replaced by ***; non-URL strings come back unchanged."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def error_detail(exc: BaseException, limit: int = 200) -> str:
    """A short one-line description of an exception for health details."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
