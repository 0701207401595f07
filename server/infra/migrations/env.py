"""Alembic environment: runs on a connection handed over by schema.migrate(), or standalone for the alembic CLI."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from typecase.server.infra.schema import import_models
from typecase.server.infra.sql import Base, normalize_url

config = context.config
import_models()  # every domain's models.py, so autogenerate sees the whole schema
target_metadata = Base.metadata


def _configure(**kw) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite can only ALTER via table copies; harmless on the other backends
        user_module_prefix="sql.",  # custom types render as sql.UTCDateTime(); the template imports sql
        on_version_apply=_record_applied,  # type: ignore[arg-type]  # alembic passes these by keyword
        **kw,
    )


def _record_applied(*, ctx, step, heads, run_args) -> None:
    applied = config.attributes.get("applied")
    if applied is not None and step.is_upgrade:
        applied.append(step.up_revision_id)


def _run(connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = os.environ.get("TYPECASE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set TYPECASE_DATABASE_URL (or sqlalchemy.url) to run alembic directly")
    return str(normalize_url(url).render_as_string(hide_password=False))


async def _run_standalone() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_standalone())
