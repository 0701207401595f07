"""What sharing costs a list and a search: 10,000 knowledge bases, 2,000 users, 200 groups; the caller owns 5
bases and is a member of 20 groups, each with grants on 10 bases. Beside each query with the sharing rule
(infra/sharing.py: `visible` for lists, `access_level` for the per-base check a search makes) it times the
owner-only query Typecase ran before sharing existed, in the same run, interleaved, on the same rows.

    .venv/bin/python bench/auth/sharing.py [--database-url URL] [--rounds 200]

Embedded by default (a SQLite file); pass a PostgreSQL or MySQL/MariaDB URL (an empty database) for the server
stores. The target (issue 25):
each ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "server", ROOT / "gen"):
    sys.path.insert(0, str(path))

USERS, GROUPS, KBS, MEMBER_OF, GRANTS_PER_GROUP, PAGE, OWNED_BY_PEER = 2_000, 200, 10_000, 20, 10, 50, 200


async def seed(db) -> tuple[str, list[str], list[str]]:
    from sqlalchemy import insert

    from typecase.server.auth.models import GroupMemberRow, GroupRow, UserRow
    from typecase.server.infra import sharing
    from typecase.server.infra.sql import new_id, utcnow
    from typecase.server.knowledge.models import KnowledgeBaseRow

    rng = random.Random(25)
    now = utcnow()
    users = [new_id() for _ in range(USERS)]
    groups = [new_id() for _ in range(GROUPS)]
    # users[1] owns as many bases as the caller sees through sharing: the owner-only baseline lists a page of the
    # same size (the caller owns 5 and is shared about 200).
    kbs = [(new_id(), users[1] if i < OWNED_BY_PEER else users[i % USERS]) for i in range(KBS)]
    me = users[0]
    async with db.session() as session:
        await session.execute(
            insert(UserRow),
            [
                {
                    "id": u,
                    "username": f"user{i}",
                    "username_lower": f"user{i}",
                    "display_name": "",
                    "role": "user",
                    "disabled": False,
                    "create_time": now,
                    "update_time": now,
                    "failed_login_count": 0,
                }
                for i, u in enumerate(users)
            ],
        )
        await session.execute(
            insert(GroupRow),
            [
                {
                    "id": g,
                    "name": f"g{i}",
                    "name_lower": f"g{i}",
                    "description": "",
                    "create_time": now,
                    "update_time": now,
                }
                for i, g in enumerate(groups)
            ],
        )
        members = {(g, me) for g in groups[:MEMBER_OF]}
        for u in users[1:]:  # everyone else in 2 random groups
            members |= {(g, u) for g in rng.sample(groups, 2)}
        await session.execute(
            insert(GroupMemberRow),
            [{"group_id": g, "user_id": u, "group_admin": False, "create_time": now} for g, u in members],
        )
        await session.execute(
            insert(KnowledgeBaseRow),
            [
                {
                    "id": k,
                    "owner_id": o,
                    "name": f"kb{i}",
                    "description": "",
                    "embedding_model_id": "m",
                    "embedding_dimensions": 8,
                    "chunking_rule": {},
                    "vector_generation": 1,
                    "create_time": now,
                    "update_time": now,
                }
                for i, (k, o) in enumerate(kbs)
            ],
        )
        grants = []
        for g in groups:
            for k, _ in rng.sample(kbs, GRANTS_PER_GROUP):
                grants.append(
                    {
                        "id": new_id(),
                        "resource_type": sharing.KNOWLEDGE_BASE,
                        "resource_id": k,
                        "grantee_type": sharing.GRANTEE_GROUP,
                        "grantee_id": g,
                        "level": sharing.USE,
                        "creator_id": None,
                        "create_time": now,
                        "update_time": now,
                    }
                )
        await session.execute(insert(sharing.GrantRow), grants)
        await session.commit()
    # Fresh statistics, as autovacuum / a DBA would have them. On PostgreSQL that is VACUUM ANALYZE: autovacuum
    # vacuums a table after 1,000 inserts (autovacuum_vacuum_insert_threshold), and the visibility map it sets is
    # what lets the planner cost an index-only scan of the grants below a scan of the whole table.
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if db.dialect == "mysql":
            await conn.exec_driver_sql("ANALYZE TABLE knowledge_bases, resource_grants, group_members, users")
        elif db.dialect == "postgresql":
            await conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            await conn.exec_driver_sql("ANALYZE")
    owned = [k for k, o in kbs if o == me]
    shared = [row["resource_id"] for row in grants if row["grantee_id"] in set(groups[:MEMBER_OF])]
    return me, users[1], owned, shared, groups[:MEMBER_OF]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    from sqlalchemy import func, select

    from typecase.server.infra import sharing
    from typecase.server.infra.schema import migrate
    from typecase.server.infra.sql import Database
    from typecase.server.knowledge.models import KnowledgeBaseRow
    from typecase.server.rpc.principal import Principal

    tmp = tempfile.mkdtemp(prefix="tc-bench-sharing-")
    db = Database(args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db")
    await db.start()
    await migrate(db)
    me, peer, owned, shared, my_groups = await seed(db)
    principal = Principal(me, "user", group_ids=tuple(my_groups))
    kb = KnowledgeBaseRow

    def page(where):
        return select(kb).where(where).order_by(kb.update_time.desc(), kb.id.desc()).limit(PAGE + 1)

    async def list_owner_only():
        async with db.session() as session:
            rows = (await session.scalars(page(kb.owner_id == peer))).all()
            total = await session.scalar(select(func.count()).select_from(kb).where(kb.owner_id == peer))
        return len(rows), total

    async def list_owner_only_one_trip():  # the owner-only query in the service's current shape, for comparison
        total = select(func.count()).select_from(kb).where(kb.owner_id == peer).scalar_subquery()
        async with db.session() as session:
            rows = (await session.execute(page(kb.owner_id == peer).add_columns(total))).all()
        return len(rows), rows[0][1]

    async def list_shared():
        # As KnowledgeService.ListKnowledgeBases: the page and its total (the visible ids counted) in one statement.
        where, ids = sharing.visible_and_ids(sharing.KNOWLEDGE_BASE, kb.id, kb.owner_id, principal)
        total = select(func.count()).select_from(ids.subquery()).scalar_subquery()
        async with db.session() as session:
            rows = (await session.execute(page(where).add_columns(total))).all()
        return len(rows), rows[0][1]

    async def check_owner_only(kb_id):  # what Search did per base before: fetch, compare the owner
        async with db.session() as session:
            row = await session.get(kb, kb_id)
            return row.owner_id == me

    async def check_shared(kb_id):  # what Search does per base now (KnowledgeService._kb): the row and the grant
        rank = sharing.grant_rank(sharing.KNOWLEDGE_BASE, kb.id, principal)
        async with db.session() as session:
            row, best = (await session.execute(select(kb, rank).where(kb.id == kb_id))).one()
            return sharing.level_of(row.owner_id, best, principal)

    assert (await list_owner_only())[1] == OWNED_BY_PEER + KBS // USERS - 1
    assert await list_owner_only_one_trip() == await list_owner_only()
    assert (await list_shared())[1] == len(set(owned) | set(shared)), "the rule must find every shared base"
    cases = {
        "list (owner-only, ~200 owned)": lambda i: list_owner_only(),
        "list (owner-only, one round trip)": lambda i: list_owner_only_one_trip(),
        "list (owned + 20 groups)": lambda i: list_shared(),
        "check a base (owner-only, own base)": lambda i: check_owner_only(owned[i % len(owned)]),
        "check a base (shared via a group)": lambda i: check_shared(shared[i % len(shared)]),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(args.rounds):  # interleaved: drift in the machine's load hits every case alike
        for name, run in cases.items():
            start = time.perf_counter()
            await run(i)
            times[name].append(time.perf_counter() - start)
    await db.stop()
    median = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    print(
        f"{db.dialect}: {KBS} knowledge bases, {USERS} users, {GROUPS} groups; caller owns {len(owned)}, "
        f"member of {MEMBER_OF} groups sharing {len(set(shared))} bases; {args.rounds} interleaved rounds"
    )
    for name, ms in median.items():
        print(f"  {name:40s} median {ms:7.3f} ms")
    list_ratio = median["list (owned + 20 groups)"] / median["list (owner-only, ~200 owned)"]
    check_ratio = median["check a base (shared via a group)"] / median["check a base (owner-only, own base)"]
    one_trip_ratio = median["list (owned + 20 groups)"] / median["list (owner-only, one round trip)"]
    print(f"  ratio list   {list_ratio:.2f}x (target <= 1.5)")
    print(f"  ratio list against the owner-only query in one round trip {one_trip_ratio:.2f}x")
    print(f"  ratio search {check_ratio:.2f}x (target <= 1.5)")


if __name__ == "__main__":
    asyncio.run(main())
