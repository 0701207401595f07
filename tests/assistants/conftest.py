"""Assistants test fixtures: one App for the package on embedded resources, loopback allowed for the SSRF guard
(the tests' MCP, OpenAPI and fake upstream servers listen there)."""

from __future__ import annotations

import os

import grpc
import pytest
import pytest_asyncio

from tests.tools.conftest import tool_settings


@pytest_asyncio.fixture(loop_scope="package", scope="package")
async def aapp(tmp_path_factory):
    from typecase.server.app import App

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("TYPECASE_"):
                mp.delenv(name)
        mp.setenv("HF_HUB_OFFLINE", "1")
        app = App(tool_settings(tmp_path_factory.mktemp("assistants") / "data"))
        await app.start()
        try:
            yield app
        finally:
            await app.stop()


@pytest_asyncio.fixture(loop_scope="package", scope="package")
async def achannel(aapp):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{aapp.grpc_port}") as channel:
        yield channel


@pytest.fixture(scope="package")
def upstream():
    from tests.assistants.scripted import ScriptedUpstream

    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def mcp_url():
    from tests.tools.servers import start, stop

    proc, port = start("tests.tools.mcp_server", "http", "{port}")
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


SERVICE_KEY = "svc-key-assistants-42"


@pytest.fixture(scope="package")
def pets_url():
    from tests.tools.servers import start, stop

    proc, port = start("tests.tools.openapi_service", "{port}", SERVICE_KEY)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="package")
def slow_url():
    from tests.tools.servers import start, stop

    proc, port = start("tests.assistants.slow_service", "{port}")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest_asyncio.fixture(loop_scope="package", scope="package")
async def world(aapp, achannel, upstream, mcp_url, pets_url, slow_url):
    """A user with an MCP provider, the pets OpenAPI service, the slow service, and a model on the fake upstream."""
    from tests.assistants.support import make_world

    return await make_world(achannel, upstream, mcp_url, pets_url, slow_url, SERVICE_KEY)
