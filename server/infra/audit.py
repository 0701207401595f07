"""The audit log: who did what to which resource, in SQL, queryable by admins.

Every domain records through `AuditLog.record`; the caller and trace id come from the call's context.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from typecase.server.infra.sql import Base, Database, JSONType, id_column, utcnow
from typecase.server.logs import trace_id_var

log = logging.getLogger("typecase.audit")


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[str] = id_column()
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(26), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str] = mapped_column(String(64), default="")
    resource_id: Mapped[str] = mapped_column(String(128), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    trace_id: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    async def record(
        self,
        action: str,
        *,
        actor_id: str | None,
        resource_type: str = "",
        resource_id: str = "",
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one event. Secrets must never be passed in `detail`."""
        async with self.db.session() as session:
            session.add(
                AuditEventRow(
                    actor_id=actor_id,
                    action=action,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    outcome=outcome,
                    trace_id=trace_id_var.get(),
                    detail=detail or {},
                )
            )
            await session.commit()

    async def query(
        self,
        *,
        limit: int,
        before_id: str | None = None,
        actor_id: str = "",
        action: str = "",
        resource_type: str = "",
        resource_id: str = "",
    ) -> list[AuditEventRow]:
        """Newest first, keyset-paged by id."""
        stmt = select(AuditEventRow).order_by(AuditEventRow.id.desc()).limit(limit)
        for column, value in (
            (AuditEventRow.actor_id, actor_id),
            (AuditEventRow.action, action),
            (AuditEventRow.resource_type, resource_type),
            (AuditEventRow.resource_id, resource_id),
        ):
            if value:
                stmt = stmt.where(column == value)
        if before_id:
            stmt = stmt.where(AuditEventRow.id < before_id)
        async with self.db.session() as session:
            return list((await session.scalars(stmt)).all())
