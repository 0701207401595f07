"""Cross-origin access on the real server: preflights and responses for allowed origins only, none by default, and
WebSocket handshakes from other origins refused unless allowed (browsers apply no CORS to WebSockets)."""

from __future__ import annotations

import httpx
import pytest
import websockets

from tests.conftest import ADMIN_KEY

ALLOWED = "http://app.example.test:3000"
OTHER = "http://evil.example.test"
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def preflight(origin: str, method: str = "POST", headers: str = "authorization,content-type") -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method, "access-control-request-headers": headers}


async def test_an_allowed_origin_passes_preflight_and_reads_responses(app_factory):
    app = await app_factory(cors_allowed_origins=[ALLOWED])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        answer = await http.options("/v1/sessions", headers=preflight(ALLOWED))
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        assert answer.headers["access-control-max-age"] == "600"
        listed = await http.get("/v1/sessions", headers={**AUTH, "origin": ALLOWED})
        assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == ALLOWED
        assert "x-trace-id" in listed.headers["access-control-expose-headers"]
        # Errors carry the header too, so the page can read the status and the reason.
        refused = await http.get("/v1/sessions", headers={"origin": ALLOWED})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED

        blocked = await http.options("/v1/sessions", headers=preflight(OTHER))
        assert blocked.status_code == 400 and "access-control-allow-origin" not in blocked.headers
        other = await http.get("/v1/sessions", headers={**AUTH, "origin": OTHER})
        assert "access-control-allow-origin" not in other.headers
        wrong_method = await http.options("/v1/sessions", headers=preflight(ALLOWED, method="TRACE"))
        assert wrong_method.status_code == 400


async def test_no_cross_origin_access_by_default(app_factory):
    app = await app_factory()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
        answer = await http.options("/v1/sessions", headers=preflight(ALLOWED))
        assert "access-control-allow-origin" not in answer.headers
        listed = await http.get("/v1/sessions", headers={**AUTH, "origin": ALLOWED})
        assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers


async def test_websocket_origin_is_checked(app_factory):
    app = await app_factory(cors_allowed_origins=[ALLOWED])
    url = f"ws://127.0.0.1:{app.http_port}/v1/admin/logs:stream"
    bearer = ["bearer", ADMIN_KEY]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=OTHER, subprotocols=bearer):
            pass
    assert refused.value.response.status_code == 403
    # The listed origin, the server's own pages (Origin matches Host) and clients without an Origin get through.
    for origin in (ALLOWED, f"http://127.0.0.1:{app.http_port}", None):
        async with websockets.connect(url, origin=origin, subprotocols=bearer) as ws:
            await ws.send("{}")
            assert ws.subprotocol == "bearer"


def test_origins_must_be_origins():
    from typecase.server.config import Settings

    with pytest.raises(ValueError, match="cors_allowed_origins: 'app.example.test' is not an origin"):
        Settings(_env_file=None, cors_allowed_origins="app.example.test")
    assert Settings(_env_file=None, cors_allowed_origins="https://a.test/, *").cors_allowed_origins == [
        "https://a.test",
        "*",
    ]
