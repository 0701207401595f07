"""AssistantService: assistants (CRUD, publish/unpublish) and the lookup chat and /openai/v1 use to run one.

Visibility: the owner and admins see and edit an assistant; everyone sees online ones (read-only) and may chat
with them; a user it is shared with (infra/sharing.py) sees and chats with it as a draft too, and at EDIT level
updates it (deleting, publishing, unpublishing and re-sharing stay the owner's). A USE grantee who tries to change it
gets PERMISSION_DENIED (SHARE_LEVEL_INSUFFICIENT); anyone else NOT_FOUND, so drafts do not leak. Publishing checks what a turn will need (the model,
the tools, the knowledge bases) through a check app.py passes in, so the domain imports no other domain."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from datetime import datetime

import grpc
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from typecase.server.assistants.convert import STATUS_NAMES, assistant_message, spec_of
from typecase.server.assistants.models import AssistantRow
from typecase.server.infra import sharing
from typecase.server.infra.sql import new_id, utcnow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.fields import LIKE_ESCAPE, like_pattern, mask_paths
from typecase.server.rpc.paging import decode_token, encode_token, page_size
from typecase.v1 import assistant_pb2, assistant_pb2_grpc

MAX_NAME = 128
MAX_DESCRIPTION = 2_000
MAX_QUESTIONS = 10
MAX_QUESTION = 500
MAX_VARIABLES = 32
MAX_REFS = 64
VARIABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
BUILTIN_VARIABLES = {"current_date", "current_time", "user_id", "assistant_name"}
OUTPUT_ONLY = {"id", "owner_id", "status", "create_time", "update_time"}
UPDATABLE = {f.name for f in assistant_pb2.Assistant.DESCRIPTOR.fields} - OUTPUT_ONLY

# What publishing checks: raises a TypecaseError naming the field when the model, a tool or a knowledge base
# cannot be used by the caller.
RefCheck = Callable[[assistant_pb2.Assistant], Awaitable[None]]


class AssistantService(assistant_pb2_grpc.AssistantServiceServicer):
    def __init__(self, settings, db, audit, check: RefCheck | None = None):
        self.settings = settings
        self.db = db
        self.audit = audit
        self.check = check

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    # -- the Python API other domains receive ------------------------------------------------------------------
    async def runnable(self, assistant_id: str) -> assistant_pb2.Assistant:
        """The assistant the caller may chat with: its own (any status) or an online one. NOT_FOUND otherwise;
        ASSISTANT_NOT_PUBLISHED when it exists but was taken offline by its owner."""
        row, held = await self._row_level(assistant_id)
        if row is None:
            raise not_found("assistant", assistant_id)
        caller.check_key_resource(sharing.ASSISTANT, assistant_id)
        if held is None and row.status != "online":
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "ASSISTANT_NOT_PUBLISHED",
                f"assistant {assistant_id} is not online",
                {"assistant_id": assistant_id},
            )
        return assistant_message(row)

    async def runnable_by_name(self, name: str) -> assistant_pb2.Assistant | None:
        """The caller's own assistant of that name, else the oldest online one; None when there is neither."""
        me = caller.current()
        async with self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(AssistantRow)
                    .where(
                        AssistantRow.name == name,
                        or_(AssistantRow.owner_id == me.user_id, AssistantRow.status == "online"),
                    )
                    .order_by(AssistantRow.create_time)
                    .limit(20)
                )
            )
        own = [r for r in rows if r.owner_id == me.user_id]
        chosen = (own or rows or [None])[0]
        return assistant_message(chosen) if chosen is not None else None

    async def online(self, limit: int) -> list[assistant_pb2.Assistant]:
        """Online assistants plus the caller's own, newest first (for /openai/v1/models)."""
        me = caller.current()
        async with self.db.session() as session:
            rows = await session.scalars(
                select(AssistantRow)
                .where(or_(AssistantRow.owner_id == me.user_id, AssistantRow.status == "online"))
                .order_by(AssistantRow.update_time.desc())
                .limit(limit)
            )
            return [assistant_message(r) for r in rows]

    # -- helpers -----------------------------------------------------------------------------------------------
    async def _row_level(self, assistant_id: str) -> tuple[AssistantRow | None, str | None]:
        """The row and what the caller holds on it (sharing.OWNER, EDIT, USE, None), in one round trip."""
        if not assistant_id or len(assistant_id) > 64:
            return None, None
        me = caller.current()
        rank = sharing.grant_rank(sharing.ASSISTANT, AssistantRow.id, me)
        async with self.db.session() as session:
            if rank is None:
                row = await session.get(AssistantRow, assistant_id)
                return row, sharing.OWNER if row is not None else None
            found = (await session.execute(select(AssistantRow, rank).where(AssistantRow.id == assistant_id))).first()
        if found is None:
            return None, None
        return found[0], sharing.level_of(found[0].owner_id, found[1], me)

    async def _visible(self, assistant_id: str) -> AssistantRow:
        row, held = await self._row_level(assistant_id)
        if row is None or not (row.status == "online" or held is not None):
            raise not_found("assistant", assistant_id)
        return row

    async def _editable(self, assistant_id: str, need: str = sharing.EDIT) -> AssistantRow:
        """Owner, admin or an EDIT grant (`need` OWNER: delete, publish, unpublish). NOT_FOUND when the caller
        holds nothing on it, PERMISSION_DENIED (SHARE_LEVEL_INSUFFICIENT) when granted below `need`."""
        row, held = await self._row_level(assistant_id)
        if row is None:
            raise not_found("assistant", assistant_id)
        sharing.require(held, need, "assistant", sharing.ASSISTANT, assistant_id)
        return row

    def _validate(self, a: assistant_pb2.Assistant, paths: set[str]) -> None:
        """INVALID_ARGUMENT naming the first bad field among `paths`."""
        s = self.settings
        if "name" in paths:
            a.name = a.name.strip()
            if not a.name:
                raise invalid_argument("assistant.name", "is required")
            if len(a.name) > MAX_NAME:
                raise invalid_argument("assistant.name", f"at most {MAX_NAME} characters")
        if "description" in paths and len(a.description) > MAX_DESCRIPTION:
            raise invalid_argument("assistant.description", f"at most {MAX_DESCRIPTION} characters")
        if "logo_url" in paths and a.logo_url:
            self._check_logo(a.logo_url)
        if "instructions" in paths and len(a.instructions) > s.assistants_max_instructions_chars:
            raise invalid_argument(
                "assistant.instructions", f"at most {s.assistants_max_instructions_chars} characters"
            )
        if "variables" in paths:
            if len(a.variables) > MAX_VARIABLES:
                raise invalid_argument("assistant.variables", f"at most {MAX_VARIABLES} variables")
            seen: set[str] = set()
            for i, v in enumerate(a.variables):
                if not VARIABLE_NAME.match(v.name):
                    raise invalid_argument(
                        f"assistant.variables[{i}].name", "letters, digits and '_', starting with a letter"
                    )
                if v.name in BUILTIN_VARIABLES or v.name in seen:
                    raise invalid_argument(f"assistant.variables[{i}].name", f"{v.name!r} is taken")
                seen.add(v.name)
        for field in ("tool_ids", "kb_ids"):
            if field in paths:
                refs = list(getattr(a, field))
                if len(refs) > MAX_REFS:
                    raise invalid_argument(f"assistant.{field}", f"at most {MAX_REFS}")
                for i, ref in enumerate(refs):
                    if not ref.strip() or len(ref) > 128:
                        raise invalid_argument(f"assistant.{field}[{i}]", "must be an id")
        if "suggested_questions" in paths:
            if len(a.suggested_questions) > MAX_QUESTIONS:
                raise invalid_argument("assistant.suggested_questions", f"at most {MAX_QUESTIONS}")
            for i, q in enumerate(a.suggested_questions):
                if not q.strip() or len(q) > MAX_QUESTION:
                    raise invalid_argument(f"assistant.suggested_questions[{i}]", f"1-{MAX_QUESTION} characters")
        if "opening_message" in paths and len(a.opening_message) > s.assistants_max_instructions_chars:
            raise invalid_argument("assistant.opening_message", "too long")
        if "max_steps" in paths and not 0 <= a.max_steps <= s.assistants_max_steps:
            raise invalid_argument("assistant.max_steps", f"between 1 and {s.assistants_max_steps} (0: the default)")
        if "tool_timeout_ms" in paths and not 0 <= a.tool_timeout_ms <= s.tools_max_call_timeout_seconds * 1000:
            raise invalid_argument(
                "assistant.tool_timeout_ms",
                f"between 0 and {int(s.tools_max_call_timeout_seconds * 1000)} (the server's maximum)",
            )
        if "knowledge_mode" in paths and a.knowledge_mode not in assistant_pb2.KnowledgeMode.values():
            raise invalid_argument("assistant.knowledge_mode", "unknown mode")
        if "generation_config" in paths and a.HasField("generation_config"):
            g = a.generation_config
            if g.HasField("temperature") and not 0 <= g.temperature <= 2:
                raise invalid_argument("assistant.generation_config.temperature", "between 0 and 2")
            if g.HasField("max_tokens") and g.max_tokens < 1:
                raise invalid_argument("assistant.generation_config.max_tokens", "at least 1")

    def _check_logo(self, url: str) -> None:
        if url.startswith("https://") and len(url) <= 2048:
            return
        if url.startswith("data:image/") and ";base64," in url:
            data = url.split(",", 1)[1]
            if len(data) * 3 // 4 > self.settings.assistants_max_logo_bytes:
                raise invalid_argument(
                    "assistant.logo_url", f"the image is over {self.settings.assistants_max_logo_bytes} bytes"
                )
            try:
                base64.b64decode(data, validate=True)
            except ValueError:
                raise invalid_argument("assistant.logo_url", "the data: URL is not valid base64") from None
            return
        raise invalid_argument("assistant.logo_url", "an https:// URL or a data:image/...;base64 URL")

    async def _audit(self, action: str, row: AssistantRow) -> None:
        await self.audit.record(
            action,
            actor_id=caller.current().user_id,
            resource_type="assistant",
            resource_id=row.id,
            detail={"name": row.name},
        )

    def _duplicate(self, name: str) -> TypecaseError:
        return TypecaseError(
            grpc.StatusCode.ALREADY_EXISTS,
            "ALREADY_EXISTS",
            f"you already have an assistant named {name!r}",
            {"field": "assistant.name"},
        )

    # -- RPCs --------------------------------------------------------------------------------------------------
    async def CreateAssistant(self, request, context):
        me = caller.require_permission("assistants.create")
        a = request.assistant
        self._validate(a, UPDATABLE)
        row = AssistantRow(
            id=new_id(),
            owner_id=me.user_id,
            name=a.name,
            description=a.description,
            status="draft",
            model_id=a.model_id,
            spec=spec_of(a),
        )
        try:
            async with self.db.session() as session:
                session.add(row)
                await session.commit()
                await session.refresh(row)
        except IntegrityError:
            raise self._duplicate(a.name) from None
        await self._audit("assistant.create", row)
        return assistant_pb2.CreateAssistantResponse(assistant=assistant_message(row))

    async def GetAssistant(self, request, context):
        row = await self._visible(request.assistant_id)
        return assistant_pb2.GetAssistantResponse(assistant=assistant_message(row))

    async def ListAssistants(self, request, context):
        me = caller.current()
        limit = page_size(request.page_size)
        scope = request.scope or assistant_pb2.ASSISTANT_SCOPE_MINE_AND_ONLINE
        if scope not in assistant_pb2.AssistantScope.values():
            raise invalid_argument("scope", "unknown scope")
        conditions = []
        if scope == assistant_pb2.ASSISTANT_SCOPE_MINE:
            conditions.append(AssistantRow.owner_id == me.user_id)
        elif scope == assistant_pb2.ASSISTANT_SCOPE_ONLINE:
            conditions.append(AssistantRow.status == "online")
        else:
            shared = sharing.visible(sharing.ASSISTANT, AssistantRow.id, AssistantRow.owner_id, me)
            mine = AssistantRow.owner_id == me.user_id if shared is None else shared
            conditions.append(or_(mine, AssistantRow.status == "online"))
        if request.keyword.strip():
            pattern = like_pattern(request.keyword.strip())
            conditions.append(
                or_(
                    func.lower(AssistantRow.name).like(pattern, escape=LIKE_ESCAPE),
                    func.lower(AssistantRow.description).like(pattern, escape=LIKE_ESCAPE),
                )
            )
        position = decode_token(request.page_token)
        if position is not None:
            try:
                at = datetime.fromisoformat(position["t"])
                last_id = str(position["id"])
            except (KeyError, TypeError, ValueError):
                raise invalid_argument("page_token", "not a page token returned by this API") from None
            conditions.append(
                or_(AssistantRow.update_time < at, and_(AssistantRow.update_time == at, AssistantRow.id < last_id))
            )
        async with self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(AssistantRow)
                    .where(*conditions)
                    .order_by(AssistantRow.update_time.desc(), AssistantRow.id.desc())
                    .limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        token = encode_token(t=rows[-1].update_time.isoformat(), id=rows[-1].id) if more and rows else ""
        return assistant_pb2.ListAssistantsResponse(
            assistants=[assistant_message(r) for r in rows], next_page_token=token
        )

    async def UpdateAssistant(self, request, context):
        given = request.assistant
        row = await self._editable(given.id)
        paths = mask_paths(
            request.update_mask if request.HasField("update_mask") else None, given, UPDATABLE, "assistant"
        )
        self._validate(given, paths)
        merged = assistant_message(row)
        for path in paths:
            merged.ClearField(path)
            field = assistant_pb2.Assistant.DESCRIPTOR.fields_by_name[path]
            if hasattr(getattr(given, path), "extend"):  # a repeated field
                getattr(merged, path).extend(getattr(given, path))
            elif field.message_type is not None:
                if given.HasField(path):
                    getattr(merged, path).CopyFrom(getattr(given, path))
            else:
                setattr(merged, path, getattr(given, path))
        if row.status == "online" and self.check is not None and paths & {"model_id", "tool_ids", "kb_ids"}:
            await self.check(merged)
        try:
            async with self.db.session() as session:
                row = await session.get(AssistantRow, row.id)
                if row is None:
                    raise not_found("assistant", given.id)
                row.name, row.description, row.model_id = merged.name, merged.description, merged.model_id
                row.spec = spec_of(merged)
                row.update_time = utcnow()
                await session.commit()
                await session.refresh(row)
        except IntegrityError:
            raise self._duplicate(merged.name) from None
        await self._audit("assistant.update", row)
        return assistant_pb2.UpdateAssistantResponse(assistant=assistant_message(row))

    async def DeleteAssistant(self, request, context):
        row = await self._editable(request.assistant_id, sharing.OWNER)
        async with self.db.session() as session:
            found = await session.get(AssistantRow, row.id)
            if found is not None:
                await session.delete(found)
                await sharing.forget(session, sharing.ASSISTANT, row.id)
                await session.commit()
        await self._audit("assistant.delete", row)
        return assistant_pb2.DeleteAssistantResponse()

    async def _set_status(self, assistant_id: str, status: assistant_pb2.AssistantStatus) -> AssistantRow:
        row = await self._editable(assistant_id, sharing.OWNER)
        if status == assistant_pb2.ASSISTANT_STATUS_ONLINE and self.check is not None:
            await self.check(assistant_message(row))
        async with self.db.session() as session:
            found = await session.get(AssistantRow, row.id)
            if found is None:
                raise not_found("assistant", assistant_id)
            found.status = STATUS_NAMES[status]
            found.update_time = utcnow()
            await session.commit()
            await session.refresh(found)
        await self._audit(f"assistant.{STATUS_NAMES[status]}", found)
        return found

    async def PublishAssistant(self, request, context):
        row = await self._set_status(request.assistant_id, assistant_pb2.ASSISTANT_STATUS_ONLINE)
        return assistant_pb2.PublishAssistantResponse(assistant=assistant_message(row))

    async def UnpublishAssistant(self, request, context):
        row = await self._set_status(request.assistant_id, assistant_pb2.ASSISTANT_STATUS_DRAFT)
        return assistant_pb2.UnpublishAssistantResponse(assistant=assistant_message(row))
