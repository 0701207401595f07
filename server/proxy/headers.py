"""Which headers cross the proxy, both ways.

RFC 7230 §6.1: hop-by-hop headers describe one connection, not the message, so a proxy removes them, together with
every header the Connection header names. Everything else is end-to-end and passes untouched, in its order and
with its original spelling (anthropic-version, anthropic-beta, x-api-key, authorization, x-stainless-*, ...),
except what belongs to the caller's dealings with Typecase rather than with the upstream: the proxy access key
header, cookies, any Typecase credential (a tc_ key or an access token in x-api-key or authorization), and the
forwarding headers (X-Forwarded-For and kin, which tell the upstream about the caller's network) unless
proxy_forward_client_address asks for them.

Header lists are ASGI style: (name, value) byte pairs; names compared lower-cased.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Headers = list[tuple[bytes, bytes]]
ACCESS_KEY_HEADER = b"x-typecase-proxy-key"

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",  # non-standard, still sent by some clients
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The proxy answered these itself on the client connection (uvicorn sends 100 Continue), so they do not go upstream.
CLIENT_CONNECTION_ONLY = frozenset({b"expect"})
CREDENTIAL_HEADERS = frozenset({b"x-api-key", b"authorization"})
# The caller's session with us and its proxy access key: never the upstream's business.
PRIVATE = frozenset({ACCESS_KEY_HEADER, b"cookie"})
FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port", b"forwarded", b"x-real-ip"}
)


def _never(value: str) -> bool:
    return False


def _credential_value(name: bytes, value: bytes) -> str:
    """The secret inside a credential header (the token of `Bearer <token>`)."""
    text = value.decode("latin-1").strip()
    if name == b"authorization":
        scheme, _, token = text.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else text
    return text


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in Connection (e.g. `Connection: close, x-internal`), lower-cased."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    headers = list(headers)
    named = connection_tokens(headers)
    return [(n, v) for n, v in headers if (low := n.lower()) not in HOP_BY_HOP and low not in named]


def request_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    preserve_host: bool,
    forward_credentials: bool,
    upstream_api_key: bytes | None,
    custom: Headers,
    content_length: int | None = None,
    own_credential: Callable[[str], bool] = _never,
    client_address: bytes | None = None,
) -> Headers:
    """The headers to send upstream for a client request.

    - hop-by-hop headers and those named in Connection are removed, and so are PRIVATE ones (cookies, the access
      key header);
    - Host is kept only with `preserve_host` (otherwise the upstream's own host is sent);
    - credentials (x-api-key, authorization) pass through unless `forward_credentials` is off or `own_credential`
      says the value is Typecase's; with `upstream_api_key` their values are replaced by it (`Bearer <key>` for
      authorization), and x-api-key is added when the client sent neither, whatever `forward_credentials` says;
    - forwarding headers (X-Forwarded-*, Forwarded, X-Real-IP) are removed, unless `client_address` is given: then
      they pass and the address is appended to X-Forwarded-For (or sent as it);
    - `custom` headers replace same-named client headers, or are added;
    - `content_length`, when given, replaces Content-Length (the body was rewritten).
    """
    raw = list(raw)
    named = connection_tokens(raw)
    drop = {n.lower() for n, _ in custom}
    if content_length is not None:
        drop.add(b"content-length")
    out: Headers = []
    saw_credential = False
    last_forwarded_for = -1
    for name, value in raw:
        low = name.lower()
        if low in HOP_BY_HOP or low in named or low in CLIENT_CONNECTION_ONLY or low in drop or low in PRIVATE:
            continue
        if low == b"host" and not preserve_host:
            continue
        if low in FORWARDING:
            if client_address is None:
                continue
            if low == b"x-forwarded-for":
                last_forwarded_for = len(out)
        if low in CREDENTIAL_HEADERS:
            if upstream_api_key is not None:
                saw_credential = True
                value = upstream_api_key if low == b"x-api-key" else b"Bearer " + upstream_api_key
            elif not forward_credentials or own_credential(_credential_value(low, value)):
                continue
        out.append((name, value))
    if upstream_api_key is not None and not saw_credential:
        out.append((b"x-api-key", upstream_api_key))
    if client_address is not None and b"x-forwarded-for" not in drop:  # a custom X-Forwarded-For wins
        if last_forwarded_for >= 0:
            name, value = out[last_forwarded_for]
            out[last_forwarded_for] = (name, value + b", " + client_address)
        else:
            out.append((b"x-forwarded-for", client_address))
    out.extend(custom)
    if content_length is not None:
        out.append((b"content-length", str(content_length).encode()))
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Upstream response headers for the client: all but hop-by-hop (the proxy frames the body itself)."""
    return strip_hop_by_hop(raw)
