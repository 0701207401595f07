"""SQL table of the assistants domain.

An assistant's editable settings (instructions, variables, tools, knowledge, generation config, bounds) are one
JSON document: they are read whole on every turn and never queried by, so columns would only add migrations.
What lists filter and sort on (owner, name, status, times) are columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from typecase.server.infra.sql import Base, JSONType, id_column, utcnow


class AssistantRow(Base):
    __tablename__ = "assistants"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[str] = id_column()
    owner_id: Mapped[str] = mapped_column(String(26), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)  # draft | online
    model_id: Mapped[str] = mapped_column(String(64), default="")
    # The Assistant message's settings as proto JSON (output-only fields left out).
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
