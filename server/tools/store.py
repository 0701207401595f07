"""SQL of the tools domain: providers and their stored tools. No policy here: the service decides who may do what
and passes the caller in (whose grants `visible` reads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Text, cast, delete, func, or_, select, true

from typecase.server.infra import sharing
from typecase.server.infra.sql import Database, new_id, utcnow
from typecase.server.rpc.fields import LIKE_ESCAPE, like_pattern
from typecase.server.rpc.principal import Principal
from typecase.server.tools.kinds.base import ToolSpec
from typecase.server.tools.models import ToolProviderRow, ToolRow


def visible(principal: Principal):
    """Providers the caller sees: all for an admin, else their own, the ones shared with everyone (`shared`) and
    the ones granted to them or their groups (infra/sharing.py)."""
    granted = sharing.visible(sharing.TOOL_PROVIDER, ToolProviderRow.id, ToolProviderRow.owner_id, principal)
    if granted is None:
        return true()
    return or_(ToolProviderRow.shared.is_(True), granted)


async def granted(session, provider: ToolProviderRow, principal: Principal) -> str | None:
    """What the caller holds on one provider: sharing.OWNER (owner, admin), EDIT, USE or None."""
    return await sharing.access_level(session, sharing.TOOL_PROVIDER, provider.id, provider.owner_id, principal)


class ToolStore:
    def __init__(self, db: Database):
        self.db = db

    async def provider(self, provider_id: str) -> ToolProviderRow | None:
        async with self.db.session() as session:
            return await session.get(ToolProviderRow, provider_id)

    async def add_provider(self, row: ToolProviderRow, specs: Sequence[ToolSpec]) -> None:
        async with self.db.session() as session:
            session.add(row)
            await session.flush()
            session.add_all(self._rows(row.id, specs))

    async def save_provider(self, row: ToolProviderRow, specs: Sequence[ToolSpec] | None = None) -> None:
        """Store the provider's changes; with `specs`, its tools are replaced (ids kept for unchanged names)."""
        async with self.db.session() as session:
            merged = await session.merge(row)
            await session.flush()
            if specs is not None:
                await self._replace(session, merged.id, specs)

    async def replace_tools(self, provider_id: str, specs: Sequence[ToolSpec], error: str) -> None:
        async with self.db.session() as session:
            row = await session.get(ToolProviderRow, provider_id)
            if row is None:
                return
            row.last_error = error
            if not error:
                row.refresh_time = utcnow()
                await self._replace(session, provider_id, specs)

    async def set_error(self, provider_id: str, error: str) -> None:
        async with self.db.session() as session:
            row = await session.get(ToolProviderRow, provider_id)
            if row is not None:
                row.last_error = error

    async def _replace(self, session, provider_id: str, specs: Sequence[ToolSpec]) -> None:
        old = {t.name: t for t in (await session.scalars(select(ToolRow).where(ToolRow.provider_id == provider_id)))}
        keep = {s.name for s in specs}
        for name, row in old.items():
            if name not in keep:
                await session.delete(row)
        for spec in specs:
            row = old.get(spec.name)
            if row is None:
                session.add(self._rows(provider_id, [spec])[0])
            else:
                row.description, row.category = spec.description, spec.category
                row.parameters, row.binding = spec.parameters, spec.binding

    @staticmethod
    def _rows(provider_id: str, specs: Sequence[ToolSpec], ids: dict[str, str] | None = None) -> list[ToolRow]:
        return [
            ToolRow(
                id=(ids or {}).get(s.name) or new_id(),
                provider_id=provider_id,
                name=s.name,
                description=s.description,
                category=s.category,
                parameters=s.parameters,
                binding=s.binding,
            )
            for s in specs
        ]

    async def seed_builtin(self, row: ToolProviderRow, specs: Sequence[ToolSpec], ids: dict[str, str]) -> None:
        """Create or bring up to date the built-in provider and its tools (fixed ids), idempotently."""
        async with self.db.session() as session:
            existing = await session.get(ToolProviderRow, row.id)
            if existing is None:
                session.add(row)
                await session.flush()
            stored = {t.name: t for t in (await session.scalars(select(ToolRow).where(ToolRow.provider_id == row.id)))}
            for spec in specs:
                tool = stored.pop(spec.name, None)
                if tool is None:
                    session.add(self._rows(row.id, [spec], ids)[0])
                else:
                    tool.description, tool.category = spec.description, spec.category
                    tool.parameters, tool.binding = spec.parameters, spec.binding
            for tool in stored.values():
                await session.delete(tool)

    async def delete_provider(self, provider_id: str) -> None:
        async with self.db.session() as session:
            await session.execute(delete(ToolRow).where(ToolRow.provider_id == provider_id))
            await session.execute(delete(ToolProviderRow).where(ToolProviderRow.id == provider_id))
            await sharing.forget(session, sharing.TOOL_PROVIDER, provider_id)

    async def list_providers(self, scope: Principal, kind: str, limit: int, after: str | None) -> list[ToolProviderRow]:
        stmt = select(ToolProviderRow).where(visible(scope)).order_by(ToolProviderRow.id.desc()).limit(limit)
        if kind:
            stmt = stmt.where(ToolProviderRow.kind == kind)
        if after:
            stmt = stmt.where(ToolProviderRow.id < after)
        async with self.db.session() as session:
            return list((await session.scalars(stmt)).all())

    async def tool_counts(self, provider_ids: Sequence[str]) -> dict[str, int]:
        if not provider_ids:
            return {}
        stmt = (
            select(ToolRow.provider_id, func.count())
            .where(ToolRow.provider_id.in_(provider_ids))
            .group_by(ToolRow.provider_id)
        )
        async with self.db.session() as session:
            return {pid: n for pid, n in (await session.execute(stmt)).all()}

    async def granted(self, provider: ToolProviderRow, principal: Principal) -> str | None:
        async with self.db.session() as session:
            return await granted(session, provider, principal)

    async def tool(self, tool_id: str) -> tuple[ToolRow, ToolProviderRow] | None:
        stmt = (
            select(ToolRow, ToolProviderRow)
            .join(ToolProviderRow, ToolProviderRow.id == ToolRow.provider_id)
            .where(ToolRow.id == tool_id)
        )
        async with self.db.session() as session:
            found = (await session.execute(stmt)).first()
        return (found[0], found[1]) if found else None

    async def list_tools(
        self, scope: Principal, *, provider_id: str, category: str, keyword: str, limit: int, after: str | None
    ) -> list[Any]:
        """Rows of (id, name, description, category, parameters_json, provider_id, provider_name, provider_kind):
        plain columns, not ORM entities, because building 1,000 entity pairs costs more than the query; the
        parameters as their stored JSON text (cast, so no backend's JSON type decodes them), because decoding and
        re-encoding 1,000 schemas to key the Struct cache was a third of a 1,000-tool page (bench/tools)."""
        stmt = (
            select(
                ToolRow.id,
                ToolRow.name,
                ToolRow.description,
                ToolRow.category,
                cast(ToolRow.parameters, Text).label("parameters_json"),
                ToolRow.provider_id,
                ToolProviderRow.name.label("provider_name"),
                ToolProviderRow.kind.label("provider_kind"),
            )
            .join(ToolProviderRow, ToolProviderRow.id == ToolRow.provider_id)
            .where(visible(scope))
            .order_by(ToolRow.id)
            .limit(limit)
        )
        if provider_id:
            stmt = stmt.where(ToolRow.provider_id == provider_id)
        if category:
            stmt = stmt.where(ToolRow.category == category)
        if keyword:
            pattern = like_pattern(keyword)
            stmt = stmt.where(
                or_(
                    func.lower(ToolRow.name).like(pattern, escape=LIKE_ESCAPE),
                    func.lower(ToolRow.description).like(pattern, escape=LIKE_ESCAPE),
                )
            )
        if after:
            stmt = stmt.where(ToolRow.id > after)
        async with self.db.session() as session:
            return list((await session.execute(stmt)).all())
