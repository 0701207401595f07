"""One App per test module (starting the local embedding model once), on embedded resources in a temp dir."""

from __future__ import annotations

import os

import grpc
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_KEY

MiB = 1024 * 1024


def knowledge_settings(data_dir, **overrides):
    from typecase.server.config import Settings

    values = {
        "data_dir": data_dir,
        "grpc_port": 0,
        "http_port": 0,
        "admin_api_key": ADMIN_KEY,
        "shutdown_grace_seconds": 1,
        "knowledge_max_upload_bytes": 2 * MiB,
        "jobs_poll_seconds": 0.2,
        "jobs_retry_backoff_seconds": 0.2,
        "jobs_shutdown_grace_seconds": 1,
        "knowledge_watch_poll_seconds": 0.2,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kapp(tmp_path_factory):
    from typecase.server.app import App

    # KNOWLEDGE_TEST_DATABASE_URL runs the module on PostgreSQL or MySQL/MariaDB instead of SQLite.
    database_url = os.environ.get("KNOWLEDGE_TEST_DATABASE_URL")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("TYPECASE_"):
                mp.delenv(name)
        mp.setenv("HF_HUB_OFFLINE", "1")
        extra = {"database_url": database_url} if database_url else {}
        app = App(knowledge_settings(tmp_path_factory.mktemp("knowledge") / "data", **extra))
        await app.start()
        try:
            yield app
        finally:
            await app.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kchannel(kapp):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{kapp.grpc_port}") as channel:
        yield channel
