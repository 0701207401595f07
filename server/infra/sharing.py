"""Sharing grants and the one SQL rule every domain uses to decide who sees a resource.

A grant opens one resource (`resource_type`, `resource_id`) to one user or group at level "use" or "edit"
(GroupService manages them). A caller may see a resource when they are an admin, own it, or hold a grant on it
directly or through one of their groups; `Principal.group_ids` carries the groups, loaded per call by the auth
guard. Domains import this module (infra), never the auth domain.

Why the list rule is `owner = me OR id IN (granted ids)` (InGranted): the granted ids come from range scans of
ix_resource_grants_grantee (one per grantee type; never a per-row probe of the grants), and each database then
looks the few ids up by primary key: SQLite plans a MULTI-INDEX OR (owner_id index + primary key), PostgreSQL a
BitmapOr once the IN is written `= ANY(ARRAY(subquery))` (as plain IN or as `id IN (owned UNION granted)` its
planner hashes the ids and scans the whole resource table: 3.0 ms against 1.4 ms with EXPLAIN ANALYZE at 10,000
bases). The caller's groups go to PostgreSQL as one array parameter (OneOf). A list counts `visible_and_ids`'s
ids (a UNION, which never touches the resource table) in the page's own statement: one round trip.

bench/auth/sharing.py (10,000 bases, 2,000 users, 200 groups, a member of 20 groups seeing ~200 bases) measures
it against the owner-only page + count of a user owning as many, on a 2-core machine at load 4-6 (two runs of 500
rounds per database): list 1.41x on SQLite, 1.39-1.45x on PostgreSQL (2.02x before the changes above), 1.09-1.11x
on MariaDB; the per-base check 1.57-1.60x / 1.37-1.41x / 1.32-1.41x (SQLite's was 1.33-1.37x on a quieter machine
and 1.56x at this load before these changes). Against the owner-only query also written as one round trip the list
is 1.6-2.0x: most of what remains is Python building the grants query (~0.2 ms) and PostgreSQL probing the primary
key once per granted id (0.3-0.5 ms for 199 ids, EXPLAIN ANALYZE; the owner's 200 bases sit in 8 heap pages, the
shared ones in 125). The grants scan is index-only once the table is vacuumed (the existing index holds
resource_id; a covering INCLUDE index measured the same). A single resource is checked in the same round trip as
its row (`grant_rank`).
"""

from __future__ import annotations

from datetime import datetime

import grpc
from sqlalchemy import (
    Index,
    String,
    UniqueConstraint,
    any_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from typecase.server.infra.sql import Base, id_column, utcnow
from typecase.server.rpc.errors import TypecaseError, not_found
from typecase.server.rpc.principal import Principal

USE = "use"
EDIT = "edit"
OWNER = "owner"  # not a grant level: what access_level answers for the owner and admins
LEVELS = (USE, EDIT)
_RANK = {USE: 1, EDIT: 2, OWNER: 3}
GRANTEE_USER = "user"
GRANTEE_GROUP = "group"

# The resource types grants may name. The assistant domain plugs in under "assistant": its owner lookup in
# app.py's sharing wiring, its queries through `visible` / `access_level` like the others. Models have no owner
# (admins manage them): only admins grant on a model, and only at level use (llm/access.py).
KNOWLEDGE_BASE = "knowledge_base"
FLOW = "flow"
TOOL_PROVIDER = "tool_provider"
ASSISTANT = "assistant"
MODEL = "model"
RESOURCE_TYPES = (KNOWLEDGE_BASE, FLOW, TOOL_PROVIDER, ASSISTANT, MODEL)
USE_ONLY = (MODEL,)  # resource types shared at level use only


class GrantRow(Base):
    __tablename__ = "resource_grants"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", "grantee_type", "grantee_id", name="uq_resource_grants"),
        Index("ix_resource_grants_grantee", "grantee_type", "grantee_id", "resource_type", "level", "resource_id"),
    )

    id: Mapped[str] = id_column()
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    grantee_type: Mapped[str] = mapped_column(String(8))
    grantee_id: Mapped[str] = mapped_column(String(26))
    level: Mapped[str] = mapped_column(String(8), default=USE)
    creator_id: Mapped[str | None] = mapped_column(String(26))
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _levels_at_least(level: str) -> tuple[str, ...]:
    return tuple(lv for lv in LEVELS if _RANK[lv] >= _RANK[level])


class InGranted(ColumnElement[bool]):
    """`column IN (subquery)`, which PostgreSQL renders `column = ANY(ARRAY(subquery))`: the subquery then runs once
    as an InitPlan and the ids probe the primary key (a bitmap index scan), where the IN form becomes a semi-join
    that hashes the ids and scans the whole resource table. SQLite and MySQL plan the IN form as index lookups."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement), ("ids", InternalTraversal.dp_clauseelement)]

    def __init__(self, column, ids):
        self.column = column
        self.ids = ids.scalar_subquery() if hasattr(ids, "scalar_subquery") else ids


@compiles(InGranted)
def _in_granted(element: InGranted, compiler, **kw) -> str:
    return f"{compiler.process(element.column, **kw)} IN {compiler.process(element.ids, **kw)}"


@compiles(InGranted, "postgresql")
def _in_granted_pg(element: InGranted, compiler, **kw) -> str:
    return f"{compiler.process(element.column, **kw)} = ANY(ARRAY{compiler.process(element.ids, **kw)})"


class OneOf(ColumnElement[bool]):
    """`column IN ($1, $2, ...)`, which PostgreSQL renders `column = ANY($1::VARCHAR[])`: one array parameter instead
    of one per group. With 20 groups the expanded IN made the list statement 0.3 ms slower on the server (asyncpg,
    the statements alone, 1,500 interleaved rounds: 1.05 against 0.73 ms)."""

    inherit_cache = True
    _traverse_internals = [
        ("expanded", InternalTraversal.dp_clauseelement),
        ("as_array", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column, values):
        self.expanded = column.in_(values)
        self.as_array = column == any_(bindparam(None, list(values), type_=ARRAY(String)))


@compiles(OneOf)
def _one_of(element: OneOf, compiler, **kw) -> str:
    return compiler.process(element.expanded, **kw)


@compiles(OneOf, "postgresql")
def _one_of_pg(element: OneOf, compiler, **kw) -> str:
    return compiler.process(element.as_array, **kw)


def _grantee(principal: Principal) -> ColumnElement[bool]:
    """Grants to the caller or one of their groups. User and group ids are both ULIDs (`new_id`), never equal, so
    the grantee id alone decides: one IN, which the per-resource lookups filter on after the
    (resource_type, resource_id) prefix of uq_resource_grants."""
    if not principal.group_ids:
        return GrantRow.grantee_id == principal.user_id
    return OneOf(GrantRow.grantee_id, (principal.user_id, *principal.group_ids))


def granted_ids(resource_type: str, principal: Principal, level: str = USE):
    """SELECT resource_id of the grants that give `principal` at least `level` on resources of this type."""
    # One SELECT per grantee type, each a range scan of ix_resource_grants_grantee (an OR of the two makes
    # PostgreSQL fall back to scanning every grant on the resource type).
    # Every grant is at least USE, so that level needs no filter (and no bound parameters to build).
    of_type = [GrantRow.resource_type == resource_type]
    if level != USE:
        of_type.append(GrantRow.level.in_(_levels_at_least(level)))
    mine = select(GrantRow.resource_id).where(
        GrantRow.grantee_type == GRANTEE_USER, GrantRow.grantee_id == principal.user_id, *of_type
    )
    if not principal.group_ids:
        return mine
    groups = select(GrantRow.resource_id).where(
        GrantRow.grantee_type == GRANTEE_GROUP, OneOf(GrantRow.grantee_id, principal.group_ids), *of_type
    )
    return union_all(mine, groups)


def _selects(statement):
    return statement.selects if hasattr(statement, "selects") else [statement]


def visible(
    resource_type: str, id_column, owner_column, principal: Principal, level: str = USE
) -> ColumnElement[bool] | None:
    """The WHERE clause for list queries: owned by the caller or granted to them (or their groups) at `level`.
    None for an admin, who sees everything."""
    if principal.is_admin:
        return None
    return or_(owner_column == principal.user_id, InGranted(id_column, granted_ids(resource_type, principal, level)))


def visible_and_ids(resource_type: str, id_column, owner_column, principal: Principal, level: str = USE):
    """`visible`'s WHERE clause and the ids the caller sees (UNION: each once), from one build of the grants query
    (building it twice cost a list 0.1 ms of Python); (None, None) for an admin. Grants are deleted with their
    resource (`forget`), so counting the ids counts the visible resources without touching the resource table,
    which PostgreSQL would otherwise scan whole for a count."""
    if principal.is_admin:
        return None, None
    granted = granted_ids(resource_type, principal, level)
    where = or_(owner_column == principal.user_id, InGranted(id_column, granted))
    owned = select(id_column).where(owner_column == principal.user_id)
    return where, union(owned, *_selects(granted))


_BEST_RANK = func.max(case((GrantRow.level == EDIT, 2), else_=1))  # built once: it holds no caller's values


def grant_rank(resource_type: str, id_column, principal: Principal):
    """A scalar subquery: the best grant the caller holds on the row's resource (2 edit, 1 use, NULL none). Selected
    beside the row (`select(Row, grant_rank(...))`), it makes the per-resource check one round trip, not two."""
    if principal.is_admin:
        return None
    return (
        select(_BEST_RANK)
        .where(GrantRow.resource_type == resource_type, GrantRow.resource_id == id_column, _grantee(principal))
        .scalar_subquery()
    )


def level_of(owner_id: str | None, rank: int | None, principal: Principal) -> str | None:
    """What `grant_rank` plus the row's owner mean: OWNER, EDIT, USE or None."""
    if principal.is_admin or (owner_id is not None and owner_id == principal.user_id):
        return OWNER
    return {2: EDIT, 1: USE}.get(rank or 0)


async def access_level(
    session, resource_type: str, resource_id: str, owner_id: str | None, principal: Principal
) -> str | None:
    """What the caller may do with one resource: OWNER (owner or admin), EDIT, USE, or None (not visible)."""
    if principal.is_admin or (owner_id is not None and owner_id == principal.user_id):
        return OWNER
    levels = (
        await session.scalars(
            select(GrantRow.level).where(
                GrantRow.resource_type == resource_type, GrantRow.resource_id == resource_id, _grantee(principal)
            )
        )
    ).all()
    return max(levels, key=lambda lv: _RANK.get(lv, 0), default=None)


def require(level_held: str | None, level_needed: str, kind: str, resource_type: str, resource_id: str) -> None:
    """NOT_FOUND when the caller cannot see the resource at all (its existence does not leak), PERMISSION_DENIED
    with SHARE_LEVEL_INSUFFICIENT when they may see it but not do this."""
    if level_held is None:
        raise not_found(kind, resource_id)
    if _RANK[level_held] < _RANK[level_needed]:
        needed = "ownership" if level_needed == OWNER else f"level {level_needed!r}"
        raise TypecaseError(
            grpc.StatusCode.PERMISSION_DENIED,
            "SHARE_LEVEL_INSUFFICIENT",
            f"this {kind} is shared with you at level {level_held!r}; this action needs {needed}",
            {"resource_type": resource_type, "level": level_needed},
        )


def at_least(level_held: str | None, level_needed: str) -> bool:
    return level_held is not None and _RANK[level_held] >= _RANK[level_needed]


async def forget(session, resource_type: str, resource_id: str) -> None:
    """Drop a deleted resource's grants, in the transaction that deletes it."""
    await session.execute(
        delete(GrantRow).where(GrantRow.resource_type == resource_type, GrantRow.resource_id == resource_id)
    )
