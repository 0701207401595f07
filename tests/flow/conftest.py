"""Flow test fixtures: one App for the whole package on embedded resources (the local models load lazily, once),
with tight run limits so that the limit tests are quick."""

from __future__ import annotations

import os

import grpc
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_KEY


def flow_settings(data_dir, **overrides):
    from typecase.server.config import Settings

    values = {
        "data_dir": data_dir,
        "grpc_port": 0,
        "http_port": 0,
        "admin_api_key": ADMIN_KEY,
        "shutdown_grace_seconds": 1,
        "jobs_poll_seconds": 0.2,
        "knowledge_watch_poll_seconds": 0.2,
        "flow_follow_poll_seconds": 0.2,
        "flow_max_steps": 40,
        "flow_code_cpu_seconds": 1,
        "flow_code_memory_mb": 128,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest_asyncio.fixture(loop_scope="package", scope="package")
async def fapp(tmp_path_factory):
    from typecase.server.app import App

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("TYPECASE_"):
                mp.delenv(name)
        mp.setenv("HF_HUB_OFFLINE", "1")
        app = App(flow_settings(tmp_path_factory.mktemp("flow") / "data"))
        await app.start()
        try:
            yield app
        finally:
            await app.stop()


@pytest_asyncio.fixture(loop_scope="package", scope="package")
async def fchannel(fapp):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fapp.grpc_port}") as channel:
        yield channel
