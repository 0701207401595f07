"""The llm tables on SQLite, PostgreSQL and MariaDB round-trip what the registry stores (long names, big counters,
JSON); tests/infra/test_domain_migrations.py checks the migration itself."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.infra.infra_support import MYSQL_ADMIN_URL, PG_ADMIN_URL, mysql_exec, pg_exec, unique
from typecase.server.infra.schema import migrate
from typecase.server.infra.sql import Database
from typecase.server.llm.models import DefaultRow, ModelRow, ProviderRow


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
async def database(request, tmp_path):
    name = unique("tc_llm")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'llm.db'}", None
    elif request.param == "postgresql":
        await pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
        url, drop = make_url(PG_ADMIN_URL).set(database=name), (pg_exec, PG_ADMIN_URL, f'DROP DATABASE "{name}" WITH (FORCE)')
    else:
        await mysql_exec(MYSQL_ADMIN_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url, drop = make_url(MYSQL_ADMIN_URL).set(database=name), (mysql_exec, MYSQL_ADMIN_URL, f"DROP DATABASE `{name}`")
    db = Database(url)
    await db.start()
    try:
        yield db
    finally:
        await db.stop()
        if drop:
            await drop[0](*drop[1:])


async def test_tables_round_trip_registry_values(database):
    await migrate(database)
    async with database.session() as session:
        provider = ProviderRow(name="p", type="openai_compatible", description="", base_url="http://x",
                               api_key_hint="", extra_headers={"x-a": "1"}, config={"k": [1, 2]}, enabled=True)
        session.add(provider)
        await session.flush()
        session.add(ModelRow(provider_id=provider.id, name="m" * 255, type="llm", tokens_per_minute=10**12,
                             fallback_model_ids=["01ABC"], config={"temperature": 0.5}, description="d" * 5000))
        session.add(DefaultRow(purpose="chat", model_id="01ABC"))
    async with database.session() as session:
        model = await session.scalar(select(ModelRow))
        assert model.tokens_per_minute == 10**12 and model.fallback_model_ids == ["01ABC"]
        assert model.config == {"temperature": 0.5} and len(model.description) == 5000
        assert (await session.get(DefaultRow, "chat")).model_id == "01ABC"
