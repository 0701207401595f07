"""The benchmark's upstream: a bare ASGI app on uvicorn (httptools, uvloop) in its own process, answering any POST
with a Server-Sent-Events stream sent as fast as the connection takes it.

  POST /v1/messages      `x-events` events of `x-event-bytes` bytes each (defaults 20 x 100): the first event
                         leaves together with the headers, so time to first byte is transport cost only
Run: python bench/proxy/upstream.py PORT
"""

from __future__ import annotations

import sys

import uvicorn


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = dict(scope["headers"])
    events = int(headers.get(b"x-events", b"20"))
    size = int(headers.get(b"x-event-bytes", b"100"))
    event = b"event: content_block_delta\ndata: " + b"x" * max(0, size - 40) + b"\n\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    for _ in range(events):
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="uvloop",
        http="httptools",
        backlog=4096,
    )
