"""Every domain's migration branch on SQLite, PostgreSQL and MariaDB: after `migrate` the schema is exactly what the
domain's models declare (alembic's autogenerate finds nothing), and each branch downgrades to its base alone and
upgrades again. Branches are found from the migration scripts, so a new domain is covered when it lands."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from typecase.server.infra.schema import alembic_config, import_models, migrate
from typecase.server.infra.sql import Base

import_models()
SCRIPTS = ScriptDirectory.from_config(alembic_config())
BRANCHES = sorted({label for rev in SCRIPTS.walk_revisions() for label in rev.branch_labels})


def branch_length(branch: str) -> int:
    """Revisions from the branch's head back to (and including) the one that opened it."""
    rev, length = SCRIPTS.get_revision(f"{branch}@head"), 1
    while rev.down_revision != "0001_foundation":  # (alembic copies a branch's label onto its later revisions)
        rev, length = SCRIPTS.get_revision(rev.down_revision), length + 1
    return length


# Tables declared in infra/ (every domain reads them) but created by one domain's branch.
INFRA_TABLES = {"auth": {"resource_grants"}}


def domain_tables(branch: str) -> set[str]:
    """The tables the branch's domain declares in typecase.server.<branch>.models (plus its INFRA_TABLES)."""
    return {
        m.local_table.name for m in Base.registry.mappers if m.class_.__module__ == f"typecase.server.{branch}.models"
    } | INFRA_TABLES.get(branch, set())


def schema_diff(tables: set[str]):
    def run(sync_conn) -> list:
        def only(obj, name, type_, reflected, compare_to) -> bool:
            table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
            return table in tables

        context = MigrationContext.configure(sync_conn, opts={"compare_type": True, "include_object": only})
        return compare_metadata(context, Base.metadata)

    return run


def table_names(sync_conn) -> set[str]:
    return set(inspect(sync_conn).get_table_names())


def test_every_domain_has_a_branch():
    assert {"auth", "chat", "flow", "knowledge", "llm"} <= set(BRANCHES)
    assert all(domain_tables(branch) for branch in BRANCHES)


async def test_branches_match_their_models_and_round_trip_alone(fresh_database):
    await migrate(fresh_database)
    everything = set()
    async with fresh_database.engine.connect() as conn:
        everything = await conn.run_sync(table_names)
    for branch in BRANCHES:
        tables = domain_tables(branch)
        assert tables <= everything, branch
        async with fresh_database.engine.connect() as conn:
            assert await conn.run_sync(schema_diff(tables)) == [], branch

        async with fresh_database.engine.begin() as conn:

            def downgrade(sync_conn, branch=branch):
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_conn
                command.downgrade(cfg, f"{branch}@-{branch_length(branch)}")

            await conn.run_sync(downgrade)
        async with fresh_database.engine.connect() as conn:
            left = await conn.run_sync(table_names)
        assert not tables & left, branch
        assert everything - left <= tables | {"audit_events", "jobs"}, (branch, everything - left)

        await migrate(fresh_database)
        async with fresh_database.engine.connect() as conn:
            assert await conn.run_sync(schema_diff(tables)) == [], branch
