"""The gateway's input caps at their limits: JSON nesting (jsontext.py) and multipart framing (multipart.py).
Both targets; the attacks themselves (100,000 levels, 60 MB part headers, ...) are in tests/security."""

from __future__ import annotations

import json
import random

import pytest
from support import Harness

from typecase.server.gateway import jsontext


def reference_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.choice(["obj", "list", "str", "num", "lit"] if depth < 8 else ["str", "num", "lit"])
    if kind == "obj":
        return {
            rng.choice(["k", 'a"]', "{x[", "\\", 'q\\"']) + str(i): random_json(rng, depth + 1)
            for i in range(rng.randint(0, 3))
        }
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "str":
        return "".join(rng.choice('ab[]{}"\\\n\u00e9\u4e2d') for _ in range(rng.randint(0, 6)))
    return rng.choice([1, -2.5e10, 0]) if kind == "num" else rng.choice([True, False, None])


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[{{{"', 0),
        ("[]", 1),
        ("{}", 1),
        ('[[], {"a": [1, {"b": {}}]}]', 5),
        ('{"k]": "v[", "x": [[["\\"]]"]]]}', 4),
        (" [ [ ] ] ", 2),
        ('"\\\\"', 0),
        ('["\\\\", [["\\\\\\""]]]', 3),
    ],
)
def test_depth_counts_brackets_outside_strings(text, depth):
    assert jsontext.depth(text) == depth == reference_depth(json.loads(text))
    assert jsontext.depth(text.encode()) == depth


def test_depth_matches_a_walk_of_the_parsed_value_on_random_documents():
    rng = random.Random(18)
    for _ in range(2000):
        value = random_json(rng)
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
            assert jsontext.depth(text) == reference_depth(value), text


def test_loads_refuses_one_level_past_the_cap_and_accepts_the_cap():
    assert jsontext.loads("[" * 5 + "]" * 5, 5) == [[[[[]]]]]
    with pytest.raises(jsontext.RpcFailure) as failure:
        jsontext.loads("[" * 6 + "]" * 6, 5)
    assert failure.value.http_status == 400 and "more than 5 levels deep" in str(failure.value)
    with pytest.raises(jsontext.RpcFailure):  # past the decoder's own recursion limit, whatever the cap
        jsontext.loads("[" * 100_000 + "]" * 100_000, 100_000)


@pytest.mark.parametrize("mode", ["inprocess", "channel"])
async def test_json_bodies_and_ndjson_messages_at_the_depth_cap(pb, mode):
    async with Harness(pb, mode, max_json_depth=3) as h:
        at_cap = {"file_name": "a.txt", "labels": {"k": "v"}}  # 2 levels
        deeper = {"file_name": "a.txt", "extra": [[[1]]]}  # 4 levels
        lines = json.dumps(at_cap) + "\n" + json.dumps({"data": "eHl6"}) + "\n"
        r = await h.client.post("/v1/shelves/s1/files", content=lines, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200 and r.json()["messages"] == 2, r.text
        r = await h.client.post(
            "/v1/shelves/s1/files",
            content=lines + json.dumps(deeper) + "\n",
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status_code == 400 and "a request message nests JSON more than 3 levels deep" in r.text, r.text
        r = await h.client.post("/v1/shelves/s1/books", json={"title": "t", "x": [[1]]})
        assert r.json()["message"].startswith('unknown field "x" in gwtest.v1.Book')  # within the cap: refused by name
        r = await h.client.post("/v1/shelves/s1/books", json={"title": "t", "x": [[[1]]]})
        assert r.status_code == 400 and "the request body nests JSON more than 3 levels deep" in r.text, r.text


def multipart_with_header_line(length: int) -> bytes:
    """A form whose file part's Content-Disposition line (without CRLF) is exactly `length` bytes."""
    head = 'Content-Disposition: form-data; name="file"; filename="'
    name = "n" * (length - len(head) - 1)
    line = head + name + '"'
    assert len(line) == length
    return (f"--XyZ\r\n{line}\r\n\r\ndata\r\n--XyZ--\r\n").encode()


@pytest.mark.parametrize("mode", ["inprocess", "channel"])
async def test_a_part_header_line_at_the_cap_passes_and_one_byte_more_is_a_400(pb, mode):
    async with Harness(pb, mode, max_part_header_bytes=300) as h:
        headers = {"content-type": "multipart/form-data; boundary=XyZ"}
        r = await h.client.post("/v1/shelves/s1/files", content=multipart_with_header_line(300), headers=headers)
        assert r.status_code == 200 and r.json()["size"] == "4", r.text
        r = await h.client.post("/v1/shelves/s1/files", content=multipart_with_header_line(301), headers=headers)
        assert r.status_code == 400 and "longer than 300 bytes" in r.json()["message"], r.text


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no parts at all
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\npartial',
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nall of it\r\n--XyZ',
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nall of it\r\n--XyZ-',
    ],
)
async def test_a_body_without_its_closing_boundary_never_reaches_the_handler_whole(gw, body):
    seen = len(gw.state.uploads)
    r = await gw.client.post(
        "/v1/shelves/s1/files", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert r.status_code == 400 and "ended before its closing boundary" in r.json()["message"], r.text
    assert len(gw.state.uploads) == seen  # the handler saw its request stream fail, not a finished upload
