"""Helpers for the domain hardening tests: real HTTP servers on loopback, REST calls as an ordinary user."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.conftest import free_port
from tests.flow.support import Caller, bearer


@asynccontextmanager
async def http_server(routes: list) -> AsyncIterator[int]:
    """A real Starlette app served by uvicorn on a free loopback port; yields the port."""
    import uvicorn
    from starlette.applications import Starlette

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await serving


def token_of(caller: Caller) -> str:
    return dict(caller.md)["authorization"].removeprefix("Bearer ")


def rest(app, caller: Caller) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.http_port}", headers=dict(bearer(token_of(caller))), timeout=60
    )


async def rest_run(http: httpx.AsyncClient, flow_id: str, inputs: dict[str, Any] | None = None) -> list[dict]:
    """POST /v1/flows/{id}:run; the NDJSON results in order (an {"error"} line fails the call)."""
    results = []
    async with http.stream("POST", f"/v1/flows/{flow_id}:run", json={"inputs": inputs or {}}) as response:
        assert response.status_code == 200, (await response.aread())[:500]
        async for line in response.aiter_lines():
            if line.strip():
                data = json.loads(line)
                assert "error" not in data, data
                results.append(data["result"])
    return results


def rest_outputs(results: list[dict]) -> dict[str, Any]:
    last = results[-1]["event"]
    assert "run_finished" in last, last
    return last["run_finished"]["outputs"]
