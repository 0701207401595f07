"""JSON text to Python values, with a cap on nesting depth (400 beyond, never a RecursionError's 500).

The standard library's C decoder recurses once per level and raises RecursionError near 1000 levels (a 100,000-
level body was a 500). The cap (``max_json_depth``, default 100, the depth protobuf's json_format allows a Struct)
is checked before decoding, by counting brackets outside strings. That costs nothing measurable for most bodies:
when the text has no more ``[`` and ``{`` than the cap it cannot nest deeper (one C-speed ``count`` each). Otherwise
strings are cut out by one regex pass, the brackets kept by ``translate``, and their running sum taken with
``itertools.accumulate``, all in C: 2.8 MB of 100,000 small objects checks in ~150 ms where ``json.loads`` takes
~80 ms; a 4 MB string full of brackets in ~20 ms. No maintained JSON library for Python takes a depth limit
(orjson's is fixed at 1024, ujson and simdjson have none), hence these lines.

``compact`` goes the other way for the streamed surfaces: the text of ``json.dumps(value, separators=(",", ":"),
ensure_ascii=False)``, written by orjson (``compact_bytes``: ~0.15 us for a chat token's message against ~1.2 for
the standard library's C encoder, made once; ``json.dumps`` itself made an encoder per value, ~1-3 us). The text is
the same (every string, int, bool and null; tests/gateway/test_jsontext.py) but for floats under 1e-4 in magnitude,
which orjson writes as other text of the same number (``1e-05`` -> ``0.00001``, ``1e-07`` -> ``1e-7``), and
non-finite floats, which it writes as null (the gateway's encoders never pass them: they write "NaN" strings).
What orjson refuses (an int beyond 64 bits, a non-string key) goes through the standard encoder as before.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import orjson

from .errors import RpcFailure, invalid_argument

DEFAULT_MAX_DEPTH = 100
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_C_ENCODER = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    if getattr(json.encoder, "c_make_encoder", None) is not None
    else None
)


def _standard(value: Any) -> str:
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


def compact_bytes(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8, non-ASCII kept (values built here: never circular)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, a key that is not a string
        return _standard(value).encode("utf-8")


def compact(value: Any) -> str:
    """``value`` as compact JSON text, non-ASCII kept (values built here: never circular)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return _standard(value)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def depth(text: bytes | str) -> int:
    """How deep the JSON text nests (exact for valid JSON; brackets inside strings do not count)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def too_deep(limit: int, what: str) -> RpcFailure:
    return invalid_argument(f"{what} nests JSON more than {limit} levels deep")


def check_depth(text: bytes | str, limit: int, what: str = "the request body") -> None:
    brackets = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    if brackets <= limit:  # cannot nest deeper than it has brackets
        return
    if depth(text) > limit:
        raise too_deep(limit, what)


def loads(text: bytes | str, limit: int = DEFAULT_MAX_DEPTH, what: str = "the request body") -> Any:
    """``json.loads`` within the depth cap; RpcFailure INVALID_ARGUMENT (400) for too deep or invalid JSON."""
    check_depth(text, limit, what)
    try:
        return json.loads(text)
    except RecursionError:  # a cap set near the decoder's own limit
        raise too_deep(limit, what) from None
    except ValueError as e:
        raise invalid_argument(f"{what} is not valid JSON: {e}") from None
