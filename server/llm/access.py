"""Who may list, get and use a model: everyone (the default), or, for a "restricted" model, admins and the users
granted it through GroupService (infra/sharing.py, resource type "model", directly or through a group).

Models have no owner: only admins grant on them, and only at level use (there is nothing to edit: admins manage
models). A caller who may not use a restricted model is told it does not exist (MODEL_NOT_FOUND), as for an
unknown model, and does not see it in lists.

Why no cache: the registry snapshot says whether a model is restricted without SQL, so open models (the common
case) cost nothing; a restricted one costs one lookup in the grants' (resource_type, resource_id) unique index,
using the caller's groups that the auth guard already loaded (auth/membership.py drops them on a membership
change). So removing bob from a group, or withdrawing a grant, holds on his next call on every replica, with no
cache to clear.

What is checked where: the LLMService RPCs (ListModels, GetModel, Generate, Complete, Embed, Rerank) and the
Python API's generate/complete whenever a caller is bound (chat turns, assistants, flows run as a user, the
/openai/v1 and /anthropic/v1 surfaces). A default model (chat, title, ...) that is restricted resolves only for
callers who may use it. Not checked: fallbacks (the admin chose them for the primary model) and the Python API's
embed_texts/rerank, which the knowledge domain calls with the model its base's owner chose.
"""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.sql.elements import ColumnElement

from typecase.server.infra import sharing
from typecase.server.infra.sql import Database
from typecase.server.llm import errors
from typecase.server.llm.models import ModelRow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError
from typecase.server.rpc.principal import Principal

EVERYONE = "everyone"
RESTRICTED = "restricted"


def bound_caller() -> Principal | None:
    """The caller of the current RPC or HTTP request; None in background work that runs for no one."""
    try:
        return caller.current()
    except TypecaseError:
        return None


def visible_filter(principal: Principal) -> ColumnElement[bool] | None:
    """The WHERE clause for model lists: open models, and restricted ones granted to the caller; None for admins."""
    if principal.is_admin:
        return None
    return or_(ModelRow.access != RESTRICTED, ModelRow.id.in_(sharing.granted_ids(sharing.MODEL, principal)))


class ModelAccess:
    def __init__(self, db: Database):
        self.db = db

    async def may_use(self, model: ModelRow, principal: Principal | None) -> bool:
        if model.access != RESTRICTED or principal is None or principal.is_admin:
            return True
        async with self.db.session() as session:
            level = await sharing.access_level(session, sharing.MODEL, model.id, None, principal)
        return level is not None

    async def check(self, model: ModelRow, ref: str, principal: Principal | None) -> None:
        """MODEL_NOT_FOUND, worded as for an unknown model, unless the caller may use `model` (`ref` is how they
        named it; empty for a default)."""
        if not await self.may_use(model, principal):
            raise errors.model_not_found(ref) if ref else errors.model_not_found("", "no default model you may use")

    async def usable(self, models: list[ModelRow], principal: Principal | None) -> list[ModelRow]:
        """The models of `models` the caller may use, with one query for all the restricted ones."""
        if principal is None or principal.is_admin or all(m.access != RESTRICTED for m in models):
            return models
        async with self.db.session() as session:
            granted = set((await session.scalars(sharing.granted_ids(sharing.MODEL, principal))).all())
        return [m for m in models if m.access != RESTRICTED or m.id in granted]
