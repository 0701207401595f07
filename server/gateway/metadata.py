"""HTTP headers <-> gRPC metadata, deadlines and trace ids (grpc-gateway's runtime/context.go).

Incoming (request headers -> invocation metadata):

* ``Authorization`` -> ``authorization`` (and, being a permanent header, ``grpcgateway-authorization``);
* IANA permanent request headers (grpc-gateway's list) -> ``grpcgateway-<name>``;
* ``Grpc-Metadata-<key>`` -> ``<key>``; ``-bin`` keys are base64 (padded or not) and arrive as bytes;
* ``X-Forwarded-Host`` (or ``Host``) -> ``x-forwarded-host``; ``X-Forwarded-For`` gets the client
  address appended -> ``x-forwarded-for``;
* ``x-trace-id``, ``traceparent`` and ``tracestate`` pass through; when neither a trace id nor a
  traceparent arrives, the gateway generates a 32-hex-digit ``x-trace-id`` and sends it, so
  interceptors always have one; the response's ``x-trace-id`` header is the request's, else the
  trace id inside ``traceparent``, else the generated one;
* ``Last-Event-ID`` -> ``last-event-id``;
* ``Grpc-Timeout`` (gRPC's ``<digits><unit>`` with unit H, M, S, m, u, n) -> the call deadline;
* with no Authorization header, an ``access_token`` query parameter or a WebSocket
  ``Sec-WebSocket-Protocol: bearer, <token>`` becomes ``authorization: Bearer <token>``.

Keys that are not valid gRPC metadata keys, and reserved ones (``grpc-*``, ``content-type``, hop-by-hop
headers) are dropped.

Outgoing: response initial metadata -> ``Grpc-Metadata-<key>`` headers, trailing metadata ->
``Grpc-Trailer-<key>`` headers (unary calls only: the body is complete before headers are sent, so
trailers travel as ordinary headers instead of HTTP trailers, which ASGI servers do not send);
``-bin`` values are base64; ``grpc-status-details-bin`` is not repeated (it is in the error body).
"""

from __future__ import annotations

import base64
import binascii
import os
import re

Metadata = tuple[tuple[str, str | bytes], ...]

METADATA_HEADER_PREFIX = "grpc-metadata-"
METADATA_PREFIX = "grpcgateway-"
TRAILER_HEADER_PREFIX = "grpc-trailer-"

# grpc-gateway's isPermanentHTTPHeader list (IANA permanent request headers), lower-cased.
PERMANENT_HEADERS = frozenset(
    h.lower()
    for h in (
        "Accept",
        "Accept-Charset",
        "Accept-Language",
        "Accept-Ranges",
        "Authorization",
        "Cache-Control",
        "Content-Type",
        "Cookie",
        "Date",
        "Expect",
        "From",
        "Host",
        "If-Match",
        "If-Modified-Since",
        "If-None-Match",
        "If-Schedule-Tag-Match",
        "If-Unmodified-Since",
        "Max-Forwards",
        "Origin",
        "Pragma",
        "Referer",
        "User-Agent",
        "Via",
        "Warning",
    )
)
_RESERVED_KEYS = frozenset(
    {
        "content-type",
        "te",
        "connection",
        "host",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)
_PERMANENT_KEYS = {h.encode("latin-1"): METADATA_PREFIX + h for h in PERMANENT_HEADERS}
_SPECIAL_HEADERS = {
    b"x-trace-id": 1,
    b"traceparent": 2,
    b"tracestate": 3,
    b"grpc-timeout": 4,
    b"x-forwarded-for": 5,
    b"x-forwarded-host": 6,
    b"last-event-id": 7,
    b"content-length": 8,
    b"sec-websocket-protocol": 9,
}
_VALID_KEY = re.compile(r"[0-9a-z_.\-]+\Z")
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])\Z")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


class HeaderError(ValueError):
    """A header the gateway cannot turn into metadata (becomes INVALID_ARGUMENT)."""


def parse_grpc_timeout(value: str) -> float:
    """Seconds from a gRPC timeout such as ``5S`` or ``100m``; raises HeaderError."""
    m = _TIMEOUT.match(value.strip())
    if not m:
        raise HeaderError(f"invalid grpc-timeout: {value}")
    return int(m.group(1)) * _TIMEOUT_UNITS[m.group(2)]


def new_trace_id() -> str:
    return os.urandom(16).hex()


_BASE64 = re.compile(r"[A-Za-z0-9+/\-_]*=*\Z")


def _decode_bin(value: str) -> bytes:
    """Standard or URL-safe base64, padded or not (grpc-gateway accepts both paddings)."""
    v = value.strip()
    if not _BASE64.match(v):
        raise HeaderError("not base64")
    v = v.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(v + "=" * (-len(v) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise HeaderError("not base64") from None


def _client_ip(client: tuple[str, int] | None) -> str | None:
    return client[0] if client else None


def peer_string(client: tuple[str, int] | list | None) -> str:
    """gRPC's peer format: ``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000``."""
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    if ":" in host:
        return f"ipv6:[{host}]:{port}"
    return f"ipv4:{host}:{port}"


class IncomingMetadata:
    """Everything the gateway derives from the request headers for one call."""

    __slots__ = (
        "metadata",
        "trace_id",
        "timeout",
        "last_event_id",
        "has_authorization",
        "ws_bearer",
        "content_type",
        "content_length",
        "accept",
    )

    def __init__(self) -> None:
        self.metadata: list[tuple[str, str | bytes]] = []
        self.trace_id = ""
        self.timeout: float | None = None
        self.last_event_id: str | None = None
        self.has_authorization = False
        self.ws_bearer: str | None = None
        self.content_type = ""
        self.content_length: int | None = None
        self.accept = ""


def incoming_metadata(
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    access_token: str | None = None,
    websocket: bool = False,
) -> IncomingMetadata:
    """Build invocation metadata from ASGI headers; raises HeaderError for an unusable header."""
    out = IncomingMetadata()
    md = out.metadata
    append = md.append
    trace_id = traceparent = forwarded_for = forwarded_host = host = None
    permanent = _PERMANENT_KEYS
    for raw_name, raw_value in headers:  # ASGI header names are lower-case bytes
        key = permanent.get(raw_name)
        if key is not None:
            value = raw_value.decode("latin-1")
            append((key, value))
            if raw_name == b"content-type":
                out.content_type = value
            elif raw_name == b"accept":
                out.accept = value
            elif raw_name == b"host":
                host = value
            elif raw_name == b"authorization":
                out.has_authorization = True
                md.insert(len(md) - 1, ("authorization", value))
            continue
        if raw_name.startswith(b"grpc-metadata-"):
            name = raw_name.decode("latin-1").lower()
            key = name[len(METADATA_HEADER_PREFIX) :]
            if not _VALID_KEY.match(key) or key.startswith("grpc-") or key in _RESERVED_KEYS:
                continue
            value = raw_value.decode("latin-1")
            if key.endswith("-bin"):
                try:
                    append((key, _decode_bin(value)))
                except HeaderError:
                    raise HeaderError(f"invalid binary header {name}: not base64") from None
            else:
                append((key, value))
            continue
        special = _SPECIAL_HEADERS.get(raw_name)
        if special is None:
            continue
        value = raw_value.decode("latin-1")
        if special == 1:
            trace_id = value
            append(("x-trace-id", value))
        elif special == 2:
            traceparent = value
            append(("traceparent", value))
        elif special == 3:
            append(("tracestate", value))
        elif special == 4:
            out.timeout = parse_grpc_timeout(value)
        elif special == 5:
            forwarded_for = value
        elif special == 6:
            forwarded_host = value
        elif special == 7:
            out.last_event_id = value
            append(("last-event-id", value))
        elif special == 8:
            out.content_length = int(value) if value.isdigit() else None
        elif special == 9 and websocket:
            protocols = [p.strip() for p in value.split(",")]
            if len(protocols) >= 2 and protocols[0].lower() == "bearer" and protocols[1]:
                out.ws_bearer = protocols[1]
    if forwarded_host or host:
        append(("x-forwarded-host", forwarded_host or host or ""))
    ip = _client_ip(client)
    if ip:
        append(("x-forwarded-for", f"{forwarded_for}, {ip}" if forwarded_for else ip))
    elif forwarded_for:
        append(("x-forwarded-for", forwarded_for))
    if not out.has_authorization:
        token = access_token or out.ws_bearer
        if token:
            append(("authorization", f"Bearer {token}"))
    if trace_id:
        out.trace_id = trace_id
    elif traceparent:
        m = _TRACEPARENT.match(traceparent.strip())
        out.trace_id = m.group(1) if m else new_trace_id()
    else:
        out.trace_id = new_trace_id()
        append(("x-trace-id", out.trace_id))
    return out


def _header_value(key: str, value: str | bytes) -> bytes | None:
    if isinstance(value, bytes) or key.endswith("-bin"):
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        return base64.b64encode(raw)
    if "\r" in value or "\n" in value:
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return None


def metadata_headers(initial: Metadata | None, trailing: Metadata | None = None) -> list[tuple[bytes, bytes]]:
    """Response headers for call metadata (Grpc-Metadata-* and, for unary calls, Grpc-Trailer-*)."""
    out: list[tuple[bytes, bytes]] = []
    for prefix, md in ((METADATA_HEADER_PREFIX, initial), (TRAILER_HEADER_PREFIX, trailing)):
        if not md:
            continue
        for key, value in md:
            if key == "grpc-status-details-bin":
                continue
            hv = _header_value(key, value)
            if hv is not None and _VALID_KEY.match(key):
                out.append(((prefix + key).encode("latin-1"), hv))
    return out
