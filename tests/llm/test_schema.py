"""The llm tables on SQLite, PostgreSQL and MariaDB round-trip what the registry stores (long names, big counters,
JSON); tests/infra/test_domain_migrations.py checks the migration itself."""

from __future__ import annotations

from sqlalchemy import select

from typecase.server.infra.schema import migrate
from typecase.server.llm.models import DefaultRow, ModelRow, ProviderRow


async def test_tables_round_trip_registry_values(fresh_database):
    await migrate(fresh_database)
    async with fresh_database.session() as session:
        provider = ProviderRow(
            name="p",
            type="openai_compatible",
            description="",
            base_url="http://x",
            api_key_hint="",
            extra_headers={"x-a": "1"},
            config={"k": [1, 2]},
            enabled=True,
        )
        session.add(provider)
        await session.flush()
        session.add(
            ModelRow(
                provider_id=provider.id,
                name="m" * 255,
                type="llm",
                tokens_per_minute=10**12,
                fallback_model_ids=["01ABC"],
                config={"temperature": 0.5},
                description="d" * 5000,
            )
        )
        session.add(DefaultRow(purpose="chat", model_id="01ABC"))
    async with fresh_database.session() as session:
        model = await session.scalar(select(ModelRow))
        assert model.tokens_per_minute == 10**12 and model.fallback_model_ids == ["01ABC"]
        assert model.config == {"temperature": 0.5} and len(model.description) == 5000
        assert (await session.get(DefaultRow, "chat")).model_id == "01ABC"
