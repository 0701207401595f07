"""The http node and redirects (issue 18, finding 4): a redirect to another origin must not carry the node's
credentials there, and the URL's own query string is kept (merged with the node's `query`). Real HTTP servers on
loopback, allowed through flow_http_allowed_hosts; flows created and run by an ordinary user over gRPC and REST."""

from __future__ import annotations

import grpc
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from tests.flow.support import chain, create_flow, new_user, node, outputs, run_flow
from tests.security.domain_support import http_server, rest, rest_outputs, rest_run

CREDENTIALS = {
    "Authorization": "Bearer upstream-secret",
    "X-Api-Key": "key-secret",
    "Cookie": "session=cookie-secret",
    "Proxy-Authorization": "Basic proxy-secret",
}


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "headers": {k: v for k, v in request.headers.items()},
            "query": sorted(request.query_params.multi_items()),
            "port": request.url.port,
        }
    )


def routes(other_port_box: dict[str, int]) -> list[Route]:
    async def elsewhere(request: Request) -> RedirectResponse:  # another origin: another port on the same host
        return RedirectResponse(f"http://127.0.0.1:{other_port_box['port']}/echo", status_code=302)

    async def here(request: Request) -> RedirectResponse:
        return RedirectResponse("/echo", status_code=307)

    return [Route("/echo", echo), Route("/elsewhere", elsewhere), Route("/here", here)]


@pytest.fixture
async def world(app_factory):
    app = await app_factory(flow_http_allowed_hosts=["127.0.0.0/8"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield app, await new_user(channel, "http-author")


def http_flow(url: str, **params):
    return chain(
        node("start", "start"),
        node("h", "http_request", url=url, headers=CREDENTIALS, **params),
        node("end", "end", outputs={"seen": "{{h.json}}"}),
    )


async def test_a_redirect_to_another_origin_drops_the_credentials_a_same_origin_one_keeps_them(world):
    app, author = world
    box: dict[str, int] = {}
    async with http_server(routes(box)) as first, http_server(routes(box)) as second:
        box["port"] = second
        cross = await create_flow(author, "cross-origin hop", http_flow(f"http://127.0.0.1:{first}/elsewhere"))
        same = await create_flow(author, "same-origin hop", http_flow(f"http://127.0.0.1:{first}/here"))

        seen = outputs(await run_flow(author, cross.id))["seen"]
        assert seen["port"] == second  # the redirect was followed to the other server
        sent = {k.lower() for k in seen["headers"]}
        assert not sent & {k.lower() for k in CREDENTIALS}, seen["headers"]

        async with rest(app, author) as http:  # the same attack over REST
            seen = rest_outputs(await rest_run(http, cross.id))["seen"]
        assert seen["port"] == second and not {k.lower() for k in seen["headers"]} & {k.lower() for k in CREDENTIALS}

        seen = outputs(await run_flow(author, same.id))["seen"]
        assert seen["port"] == first
        assert {k: seen["headers"].get(k.lower()) for k in CREDENTIALS} == CREDENTIALS


async def test_the_urls_own_query_string_is_kept_and_merged_with_the_nodes_query(world):
    app, author = world
    async with http_server([Route("/echo", echo)]) as port:
        flow = await create_flow(
            author,
            "query merge",
            http_flow(f"http://127.0.0.1:{port}/echo?page=2&lang=en", query={"lang": "fr", "q": "herons"}),
        )
        seen = outputs(await run_flow(author, flow.id))["seen"]
        assert seen["query"] == [["lang", "fr"], ["page", "2"], ["q", "herons"]]
        async with rest(app, author) as http:
            seen = rest_outputs(await rest_run(http, flow.id))["seen"]
        assert seen["query"] == [["lang", "fr"], ["page", "2"], ["q", "herons"]]

        plain = await create_flow(author, "query kept", http_flow(f"http://127.0.0.1:{port}/echo?page=2&lang=en"))
        assert outputs(await run_flow(author, plain.id))["seen"]["query"] == [["lang", "en"], ["page", "2"]]
