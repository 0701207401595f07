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
