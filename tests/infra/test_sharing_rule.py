"""The sharing rule's SQL (infra/sharing.py) on SQLite, PostgreSQL and MariaDB: each database renders the group list
its own way (an IN list, or one array parameter on PostgreSQL), and the list page carries its total in the same
statement, as KnowledgeService.ListKnowledgeBases runs it."""

from __future__ import annotations

from sqlalchemy import func, select

from typecase.server.infra import sharing
from typecase.server.infra.schema import migrate
from typecase.server.infra.sql import new_id
from typecase.server.knowledge.models import KnowledgeBaseRow
from typecase.server.rpc.principal import Principal

KB = KnowledgeBaseRow
ME, PEER = new_id(), new_id()
MY_GROUPS = (new_id(), new_id(), new_id())
OTHER_GROUP = new_id()


def _base(owner: str, name: str) -> KnowledgeBaseRow:
    return KB(id=new_id(), owner_id=owner, name=name, embedding_model_id="m", embedding_dimensions=8)


def _grant(kb: KnowledgeBaseRow, grantee_type: str, grantee_id: str, level: str) -> sharing.GrantRow:
    return sharing.GrantRow(
        resource_type=sharing.KNOWLEDGE_BASE,
        resource_id=kb.id,
        grantee_type=grantee_type,
        grantee_id=grantee_id,
        level=level,
    )


async def test_the_rule_sees_owned_user_and_group_grants_and_nothing_else(fresh_database):
    await migrate(fresh_database)
    mine = _base(ME, "mine")
    to_me = _base(PEER, "granted to me")
    to_group = [_base(PEER, f"granted to group {i}") for i in range(len(MY_GROUPS))]
    twice = _base(PEER, "granted to me and a group")
    elsewhere = _base(PEER, "granted to another group")
    private = _base(PEER, "private")
    grants = [
        _grant(to_me, sharing.GRANTEE_USER, ME, sharing.USE),
        *(_grant(kb, sharing.GRANTEE_GROUP, g, sharing.USE) for kb, g in zip(to_group, MY_GROUPS, strict=True)),
        _grant(twice, sharing.GRANTEE_USER, ME, sharing.USE),
        _grant(twice, sharing.GRANTEE_GROUP, MY_GROUPS[0], sharing.EDIT),
        _grant(elsewhere, sharing.GRANTEE_GROUP, OTHER_GROUP, sharing.EDIT),
    ]
    async with fresh_database.session() as session:
        session.add_all([mine, to_me, *to_group, twice, elsewhere, private])
        await session.flush()
        session.add_all(grants)
        await session.commit()

    me = Principal(ME, "user", group_ids=MY_GROUPS)
    alone = Principal(ME, "user")
    seen = {kb.id for kb in (mine, to_me, *to_group, twice)}
    cases = [
        # (principal, level, ids expected in the list)
        (me, sharing.USE, seen),
        (me, sharing.EDIT, {mine.id, twice.id}),
        (alone, sharing.USE, {mine.id, to_me.id, twice.id}),
        (alone, sharing.EDIT, {mine.id}),
    ]
    async with fresh_database.session() as session:
        for principal, level, expected in cases:
            where, ids = sharing.visible_and_ids(sharing.KNOWLEDGE_BASE, KB.id, KB.owner_id, principal, level)
            total = select(func.count()).select_from(ids.subquery()).scalar_subquery()
            page = (await session.execute(select(KB.id, total).where(where).order_by(KB.id))).all()
            assert {row_id for row_id, _ in page} == expected, (principal.group_ids, level)
            assert {n for _, n in page} == {len(expected)}, (principal.group_ids, level)
            assert set((await session.scalars(select(KB.id).where(where))).all()) == expected

        for kb, level in [(mine, sharing.OWNER), (to_group[2], sharing.USE), (twice, sharing.EDIT), (private, None)]:
            row, rank = (
                await session.execute(
                    select(KB, sharing.grant_rank(sharing.KNOWLEDGE_BASE, KB.id, me)).where(KB.id == kb.id)
                )
            ).one()
            assert sharing.level_of(row.owner_id, rank, me) == level, kb.name
            assert await sharing.access_level(session, sharing.KNOWLEDGE_BASE, kb.id, kb.owner_id, me) == level
        assert await sharing.access_level(session, sharing.KNOWLEDGE_BASE, elsewhere.id, PEER, me) is None
