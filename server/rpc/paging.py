"""List pagination: page sizes with explicit limits and opaque keyset cursors.

A page token encodes the sort key of the last item returned, so pages stay stable while rows are added
(ids are ULIDs, sortable by creation time). Tokens are opaque to clients: base64 of a small JSON document.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from typecase.server.rpc.errors import invalid_argument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if requested < 0:
        raise invalid_argument("page_size", "must not be negative")
    return min(requested or default, maximum)


def encode_token(**position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    """The position a token encodes, None for the first page; INVALID_ARGUMENT for a token we did not issue."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid_argument("page_token", "not a page token returned by this API") from None
    if not isinstance(position, dict):
        raise invalid_argument("page_token", "not a page token returned by this API")
    return position
