"""The http node's SSRF guard and IPv6 addresses that carry an IPv4 one (issue 18, finding 5): an ordinary user's
flow may not reach the server's loopback or LAN through IPv4-compatible, NAT64, 6to4, Teredo or site-local
addresses. Over gRPC and REST; each refusal is PERMISSION_DENIED before any connection is tried."""

from __future__ import annotations

import grpc
import pytest

from tests.flow.support import chain, create_flow, new_user, node, reason_of, run_flow
from tests.security.domain_support import rest, rest_run

TARGETS = [
    "http://[::127.0.0.1]:9/",
    "http://[::ffff:127.0.0.1]:9/",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
    "http://[64:ff9b:1::7f00:1]:9/",
    "http://[2002:7f00:1::1]:9/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]:9/",
    "http://[fec0::1]:9/",
]


@pytest.fixture
async def world(app_factory):
    app = await app_factory()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield app, await new_user(channel, "ssrf-author")


async def test_ipv6_forms_of_non_public_addresses_are_refused(world):
    app, author = world
    async with rest(app, author) as http:
        for url in TARGETS:
            flow = await create_flow(
                author,
                f"reach {url}",
                chain(node("start", "start"), node("h", "http_request", url=url, timeout_ms=300), node("end", "end")),
            )
            events = await run_flow(author, flow.id)
            failed = events[-1].event.run_failed
            assert reason_of(failed) == "PERMISSION_DENIED", (url, failed.message)
            assert "non-public address" in failed.message, url

            results = await rest_run(http, flow.id)
            error = results[-1]["event"]["run_failed"]
            assert error["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0], (url, error)
