"""SSEReader batching: one event per batch until the first token, then everything one network read holds."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from typecase.server.infra.http import RawResponse
from typecase.server.llm.providers import UNAVAILABLE, UpstreamError
from typecase.server.llm.providers.http import EventParser, SSEReader


class Reads(httpx.AsyncByteStream):
    def __init__(self, *reads: bytes):
        self.reads = reads
        self.taken = 0

    async def __aiter__(self):
        for data in self.reads:
            self.taken += 1
            yield data


def reader(*reads: bytes | Reads, max_event_chars: int = 1 << 20) -> SSEReader:
    body = reads[0] if isinstance(reads[0], Reads) else Reads(*reads)
    response = RawResponse(200, "OK", [(b"content-type", b"text/event-stream")], body)
    return SSEReader(response, asyncio.get_running_loop().time() + 5, 5, max_event_chars)


async def read_all(sse: SSEReader) -> list[tuple[str, str]]:
    sse.started = True
    seen = []
    while (batch := await sse.next_batch()) is not None:
        seen += [(e.event, e.data) for e in batch]
    return seen


def httpx_sse(text: bytes) -> list[tuple[str, str]]:
    lines, decoder = SSELineDecoder(), SSEDecoder()
    return [(e.event, e.data) for line in lines.decode(text.decode()) if (e := decoder.decode(line)) is not None]


def event(text: str) -> bytes:
    return f"data: {text}\n\n".encode()


async def test_a_burst_before_the_first_token_is_decoded_one_event_at_a_time():
    sse = reader(event("role") + event("tok0") + event("tok1") + event("tok2"), event("tok3") + event("tok4"))
    assert [e.data for e in await sse.next_batch()] == ["role"]
    assert [e.data for e in await sse.next_batch()] == ["tok0"]
    sse.started = True  # what an adapter sets once it handed out a token
    assert [e.data for e in await sse.next_batch()] == ["tok1", "tok2"]  # the rest of the first read
    assert [e.data for e in await sse.next_batch()] == ["tok3", "tok4"]
    assert await sse.next_batch() is None


async def test_events_split_across_reads_and_other_line_endings_decode_as_one_text_would():
    reads = (b"data: a\r\n\r\ndata: b", b"\n\nevent: x\ndata: c\n", b"\n: comment\n\ndata: d\r", b"\ndata: e\n\n")
    lines, decoder = SSELineDecoder(), SSEDecoder()
    whole = [e for line in lines.decode(b"".join(reads).decode()) if (e := decoder.decode(line)) is not None]
    sse = reader(*reads)
    seen = []
    while (batch := await sse.next_batch()) is not None:
        seen += batch
    assert [(e.event, e.data) for e in seen] == [(e.event, e.data) for e in whole]
    assert [e.data for e in seen] == ["a", "b", "c", "d\ne"]


async def test_a_character_split_across_reads_and_an_event_without_data():
    text = 'data: {"content":"héllo"}\n\n'.encode()
    cut = text.index("é".encode()) + 1  # inside the two bytes of é
    sse = reader(text[:cut], text[cut:] + b"event: ping\n\n: only a comment\n\ndata: [DONE]\n\n")
    sse.started = True
    seen = []
    while (batch := await sse.next_batch()) is not None:
        seen += batch
    assert [(e.event, e.data) for e in seen] == [
        ("message", '{"content":"héllo"}'),
        ("ping", ""),
        ("message", "[DONE]"),
    ]


async def test_fields_as_the_event_stream_format_reads_them():
    reads = (b"data\ndata:x\ndata:  y\n\n\n\nfoo: bar\n\nretry: 5\n\nevent: e\ndata: 1\ndata: 2\n\n", b"data: cut")
    sse = reader(*reads)
    sse.started = True
    seen = []
    while (batch := await sse.next_batch()) is not None:
        seen += batch
    # data lines joined by newlines (one leading space dropped), an unknown field alone makes no event, a retry
    # alone makes an empty one (as httpx-sse did), an event the body ends in the middle of is dropped
    assert [(e.event, e.data) for e in seen] == [("message", "\nx\n y"), ("message", ""), ("e", "1\n2")]


@pytest.fixture(params=["short", "long"])
def events_kept(request, monkeypatch):
    """Events still arriving kept as one string (short), or as a list of reads (what long ones are)."""
    if request.param == "long":
        monkeypatch.setattr(EventParser, "LONG_EVENT", 2)


async def test_every_way_of_cutting_a_stream_into_three_reads_decodes_as_the_whole_text(events_kept):
    # blank lines that straddle two reads, runs of them, CRLF cut in half, an event held over several reads
    text = b"data: a\r\n\r\n\n\ndata: bb\nevent: x\n\ndata: c\n\ndata: d\n\n"
    whole = httpx_sse(text)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert await read_all(reader(text[:i], text[i:j], text[j:])) == whole, (i, j)


async def test_an_event_goes_out_with_the_read_that_ends_it_when_its_blank_line_straddles_two_reads(events_kept):
    reads = Reads(b"data: a\n", b"\n", b"data: b\n", b"\ndata: c", b"\n\n")
    sse = reader(reads)
    sse.started = True
    assert [e.data for e in await sse.next_batch()] == ["a"]
    assert reads.taken == 2
    assert [e.data for e in await sse.next_batch()] == ["b"]
    assert reads.taken == 4
    assert [e.data for e in await sse.next_batch()] == ["c"]


async def test_an_event_may_grow_to_the_limit_over_many_reads_and_no_further(events_kept):
    long = b"data: " + b"x" * 994  # 1000 characters without its blank line
    assert await read_all(reader(*[long[k : k + 7] for k in range(0, 1000, 7)], b"\n\n", max_event_chars=1000)) == [
        ("message", "x" * 994)
    ]
    endless = reader(*[long[k : k + 7] for k in range(0, 1000, 7)], b"y", b"\n\n", max_event_chars=1000)
    with pytest.raises(UpstreamError) as caught:
        await read_all(endless)
    assert caught.value.kind == UNAVAILABLE
    assert "longer than 1000 characters" in caught.value.message
    assert "TYPECASE_LLM_MAX_STREAM_EVENT_CHARS" in caught.value.message
