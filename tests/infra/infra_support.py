"""Helpers shared by the infra tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("TYPECASE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("TYPECASE_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("TYPECASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MILVUS_URI = os.environ.get("TYPECASE_TEST_MILVUS_URI")
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is already running here
    (session fixtures may be first requested from inside an async test)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def pg_exec(url: str, *statements: str) -> None:
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database=u.database, timeout=5
    )
    try:
        for stmt in statements:
            await conn.execute(stmt)
    finally:
        await conn.close()


async def mysql_exec(url: str, *statements: str) -> None:
    import aiomysql

    u = make_url(url)
    conn = await aiomysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, password=u.password or "", connect_timeout=5
    )
    try:
        async with conn.cursor() as cur:
            for stmt in statements:
                await cur.execute(stmt)
    finally:
        conn.close()
