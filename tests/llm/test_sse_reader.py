"""SSEReader batching: one event per batch until the first token, then everything one network read holds."""

from __future__ import annotations

import asyncio

import httpx
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from typecase.server.infra.http import RawResponse
from typecase.server.llm.providers.http import SSEReader


class Reads(httpx.AsyncByteStream):
    def __init__(self, *reads: bytes):
        self.reads = reads

    async def __aiter__(self):
        for data in self.reads:
            yield data


def reader(*reads: bytes) -> SSEReader:
    response = RawResponse(200, "OK", [(b"content-type", b"text/event-stream")], Reads(*reads))
    return SSEReader(response, asyncio.get_running_loop().time() + 5, 5)


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
