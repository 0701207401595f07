"""The streamed surfaces' JSON text (jsontext.compact / compact_bytes, written by orjson) against the standard
library's json.dumps(value, separators=(",", ":"), ensure_ascii=False) that it replaced."""

from __future__ import annotations

import json
import random
import struct

from typecase.server.gateway import jsontext


def reference(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_strings_ints_and_structure_are_the_same_text():
    chars = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)
    for i in range(0, len(chars), 4096):  # every code point, escapes included
        assert jsontext.compact(chars[i : i + 4096]) == reference(chars[i : i + 4096])
    value = {
        "seq": "7",
        "event": {"time": "2026-12-07T23:38:40.954383Z", "token": {"text": ' a "b"\n\\ é ✓', "node_id": ""}},
        "n": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, True, False, None, [], {}],
    }
    assert jsontext.compact(value) == reference(value)
    assert jsontext.compact_bytes(value) == reference(value).encode("utf-8")


def test_floats_are_the_same_number():
    rng = random.Random(27)
    values = [0.0, -0.0, 0.1, 1.5, 1e-5, 1.25e-7, 1e16, 1e22, 5e-324, 1.7976931348623157e308, 3.4028234663852886e38]
    while len(values) < 20_000:
        v = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if v - v == 0:
            values.append(v)
    for v in values:
        text = jsontext.compact(v)
        assert json.loads(text) == v and str(json.loads(text)) == str(v), (v, text)
        assert jsontext.compact_bytes([v]) == f"[{text}]".encode()


def test_what_orjson_refuses_is_written_as_before():
    for value in ({"big": 2**64}, {1: "int key"}, [-(2**63) - 1]):
        assert jsontext.compact(value) == reference(value)
        assert jsontext.compact_bytes(value) == reference(value).encode("utf-8")
