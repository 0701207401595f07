"""Composition of sharing (part of the composition root, beside app.py): who owns a resource a grant names.

GroupService (auth domain) lets a resource's owner share it, so it must learn the owner of a knowledge base, a flow
or a tool provider without importing those domains; this module, like app.py, may know every domain's tables and
answers auth.groups.ResourceOwners with one primary-key lookup. A new shareable domain adds its (id column, owner column) to
OWNER_COLUMNS.
"""

from __future__ import annotations

from sqlalchemy import select

from typecase.server.assistants.models import AssistantRow
from typecase.server.flow.models import FlowRow
from typecase.server.infra import sharing
from typecase.server.infra.sql import Database
from typecase.server.knowledge.models import KnowledgeBaseRow
from typecase.server.llm.models import ModelRow
from typecase.server.tools.models import ToolProviderRow

OWNER_COLUMNS = {
    sharing.KNOWLEDGE_BASE: (KnowledgeBaseRow.id, KnowledgeBaseRow.owner_id),
    sharing.FLOW: (FlowRow.id, FlowRow.owner_id),
    sharing.TOOL_PROVIDER: (ToolProviderRow.id, ToolProviderRow.owner_id),
    sharing.ASSISTANT: (AssistantRow.id, AssistantRow.owner_id),
    sharing.MODEL: (ModelRow.id, None),  # no owner: only admins grant on a model
}


class SqlResourceOwners:
    def __init__(self, db: Database):
        self.db = db
        self.columns = dict(OWNER_COLUMNS)

    def register(self, resource_type: str, id_column, owner_column=None) -> None:
        """Hook for a domain that lands later (sharing.ASSISTANT): its table's id and owner columns."""
        self.columns[resource_type] = (id_column, owner_column)

    async def owner_of(self, resource_type: str, resource_id: str) -> tuple[bool, str | None]:
        columns = self.columns.get(resource_type)
        if columns is None:
            return False, None
        id_column, owner_column = columns
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(id_column if owner_column is None else owner_column).where(id_column == resource_id)
                )
            ).first()
        if row is None:
            return False, None
        return True, (None if owner_column is None else row[0])
