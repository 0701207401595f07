"""Fixtures for the infra contract suites: real PostgreSQL, MariaDB and Redis (CI guarantees them), an S3 server
(moto) started here, milvus-lite in a temp dir.

Server addresses can be overridden with TYPECASE_TEST_PG_DSN and TYPECASE_TEST_MYSQL_DSN (admin database URLs),
TYPECASE_TEST_REDIS_URL and TYPECASE_TEST_MILVUS_URI (adds a Milvus server run).
An unreachable server fails the tests that need it: it is never a reason to skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from .infra_support import MYSQL_ADMIN_URL, PG_ADMIN_URL, REDIS_URL, free_port, mysql_exec, pg_exec, run_async, unique


def _unreachable(what: str, url: str, exc: BaseException) -> None:
    pytest.fail(
        f"{what} is not reachable at {make_url(url).render_as_string(hide_password=True)} "
        f"({type(exc).__name__}: {exc}). The infra tests need it running (CI provides it); "
        f"start it or point the TYPECASE_TEST_* variable at one.",
        pytrace=False,
    )


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database created for this test session, dropped at the end."""
    name = unique("typecase_test")
    try:
        run_async(pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unreachable("PostgreSQL", PG_ADMIN_URL, exc)
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    run_async(pg_exec(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ------------------------------------------------------------------------------------------ MariaDB/MySQL


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A MariaDB/MySQL database created for this test session, dropped at the end."""
    name = unique("typecase_test")
    try:
        run_async(mysql_exec(MYSQL_ADMIN_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as exc:
        _unreachable("MariaDB/MySQL", MYSQL_ADMIN_URL, exc)
    yield make_url(MYSQL_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    run_async(mysql_exec(MYSQL_ADMIN_URL, f"DROP DATABASE IF EXISTS `{name}`"))


# ------------------------------------------------------------------------------------------ Redis


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        _unreachable("Redis", REDIS_URL, exc)
    finally:
        client.close()
    return REDIS_URL


# ------------------------------------------------------------------------------------------ S3 (moto)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3 server (moto) on a free loopback port for this session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
