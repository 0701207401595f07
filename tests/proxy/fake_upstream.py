"""A real HTTP server standing in for Anthropic and OpenAI: uvicorn on a loopback port, in its own thread and event
loop, speaking /v1/messages and /v1/chat/completions (plain and SSE streaming) and recording what it received.

Behaviour is steered by request headers the clients send (they pass through the proxy like any other header):
  x-fake-delay-ms    pause before each streamed event (default 0)
  x-fake-tokens      text deltas to stream (default 3)
  x-fake-status      answer with this status and an error body
  x-fake-hang-ms     wait this long before answering at all
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def names(self) -> set[str]:
        return {k for k, _ in self.headers}

    def json(self):
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    requests: list[Received] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)  # paths whose streamed response the client abandoned
    completed: list[str] = field(default_factory=list)
    port: int = 0
    tls: tuple[str, str] | None = None  # (certificate file, key file): serve HTTPS

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def last(self, path: str | None = None) -> Received:
        return next(r for r in reversed(self.requests) if path is None or r.path == path)

    # -- ASGI -------------------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the request was abandoned mid-body
                self.aborted.append(scope["path"])
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        got = Received(scope["method"], scope["path"], scope["query_string"].decode(), headers, b"".join(chunks))
        self.requests.append(got)
        hang = int(got.header("x-fake-hang-ms") or 0)
        if hang:
            await asyncio.sleep(hang / 1000)
        status = int(got.header("x-fake-status") or 200)
        if status >= 400:
            body = json.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": "overloaded_error" if status == 529 else "api_error",
                        "message": "fake failure; key sk-secret0123456789",
                    },
                }
            )
            await _respond(send, status, [(b"content-type", b"application/json")], body.encode())
            return
        payload = {}
        if got.body:
            try:
                payload = json.loads(got.body)
            except ValueError:
                payload = {}
        delay = int(got.header("x-fake-delay-ms") or 0) / 1000
        tokens = int(got.header("x-fake-tokens") or 3)
        extra = [
            (b"x-upstream-kept", b"yes"),
            (b"connection", b"x-upstream-private"),
            (b"x-upstream-private", b"must-not-reach-client"),
            (b"keep-alive", b"timeout=5"),
            (b"request-id", b"req_fake_1"),
        ]
        if got.path == "/v1/messages" and isinstance(payload, dict) and payload.get("stream"):
            await self._stream(send, _anthropic_events(payload, tokens), delay, got.path, extra, receive)
        elif got.path == "/v1/messages":
            await _respond(
                send,
                200,
                [(b"content-type", b"application/json"), *extra],
                json.dumps(_anthropic_message(payload, tokens)).encode(),
            )
        elif got.path == "/v1/chat/completions" and isinstance(payload, dict) and payload.get("stream"):
            await self._stream(send, _openai_chunks(payload, tokens), delay, got.path, extra, receive)
        elif got.path == "/v1/chat/completions":
            await _respond(
                send,
                200,
                [(b"content-type", b"application/json"), *extra],
                json.dumps(_openai_completion(payload, tokens)).encode(),
            )
        else:  # anything else: echo what arrived
            echo = {"method": got.method, "path": got.path, "query": got.query, "body_bytes": len(got.body)}
            await _respond(send, 200, [(b"content-type", b"application/json"), *extra], json.dumps(echo).encode())

    async def _stream(self, send, events: list[bytes], delay: float, path: str, extra, receive) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *extra],
            }
        )
        gone = asyncio.ensure_future(receive())  # the body is in: the next message is http.disconnect
        try:
            for event in events:
                if delay:
                    await asyncio.sleep(delay)
                if gone.done():
                    self.aborted.append(path)
                    return
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.completed.append(path)
        finally:
            gone.cancel()

    # -- running ----------------------------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        tls = {"ssl_certfile": self.tls[0], "ssl_keyfile": self.tls[1]} if self.tls else {}
        config = uvicorn.Config(self, lifespan="off", log_config=None, access_log=False, timeout_keep_alive=30, **tls)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for the proxy's idle keep-alive connections
        self._thread.join(10)


async def _respond(send, status: int, headers, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _sse(event: str | None, data: dict | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


def _anthropic_message(payload: dict, tokens: int) -> dict:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": payload.get("model", "fake"),
        "content": [{"type": "text", "text": " ".join(f"tok{i}" for i in range(tokens))}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": tokens},
    }


def _anthropic_events(payload: dict, tokens: int) -> list[bytes]:
    model = payload.get("model", "fake")
    events = [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 11, "output_tokens": 1},
                },
            },
        ),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for i in range(tokens):
        events.append(
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}},
            )
        )
    events += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": tokens},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return events


def _openai_completion(payload: dict, tokens: int) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": " ".join(f"tok{i}" for i in range(tokens))},
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": 7 + tokens},
    }


def _openai_chunks(payload: dict, tokens: int) -> list[bytes]:
    model = payload.get("model", "fake")

    def chunk(delta: dict, finish=None, usage=None) -> bytes:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return _sse(None, body)

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": f"tok{i} "}) for i in range(tokens)]
    out.append(chunk({}, "stop", {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": 7 + tokens}))
    out.append(_sse(None, "[DONE]"))
    return out


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files in `directory`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = f"{directory}/upstream.crt", f"{directory}/upstream.key"
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_file, key_file
