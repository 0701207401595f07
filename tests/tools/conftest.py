"""Tools test fixtures: one App for the package on embedded resources, loopback allowed for the SSRF guard (the
tests' MCP and OpenAPI servers listen there) and MCP stdio enabled."""

from __future__ import annotations

import os

import grpc
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_KEY


def tool_settings(data_dir, **overrides):
    from typecase.server.config import Settings

    values = {
        "data_dir": data_dir,
        "grpc_port": 0,
        "http_port": 0,
        "admin_api_key": ADMIN_KEY,
        "shutdown_grace_seconds": 1,
        "flow_http_allowed_hosts": ["127.0.0.1"],
        "tools_mcp_stdio_enabled": True,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest_asyncio.fixture(loop_scope="package", scope="package")
async def tapp(tmp_path_factory):
    from typecase.server.app import App

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("TYPECASE_"):
                mp.delenv(name)
        mp.setenv("HF_HUB_OFFLINE", "1")
        app = App(tool_settings(tmp_path_factory.mktemp("tools") / "data"))
        await app.start()
        try:
            yield app
        finally:
            await app.stop()


@pytest_asyncio.fixture(loop_scope="package", scope="package")
async def tchannel(tapp):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tapp.grpc_port}") as channel:
        yield channel
