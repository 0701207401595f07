"""Chat session RPCs: create, list, get, update, delete and copy sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update

from typecase.server.chat.convert import session_message
from typecase.server.chat.ids import monotonic_id, monotonic_ids
from typecase.server.chat.models import ChatMessageRow, ChatSessionRow
from typecase.server.chat.rpc_base import ChatBase, permission_denied
from typecase.server.chat.search_query import check_settings
from typecase.server.infra.sql import utcnow
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import invalid_argument
from typecase.server.rpc.fields import LIKE_ESCAPE, like_pattern, mask_paths
from typecase.v1 import chat_pb2

SESSION_FIELDS = {"title", "model_id", "system_prompt", "kb_ids", "metadata", "retrieval"}


class SessionRpcs(ChatBase):
    # -- sessions --------------------------------------------------------------------------------------------
    async def CreateSession(self, request, context):
        me = caller.current()
        given = request.session
        kind = given.kind or (
            chat_pb2.SESSION_KIND_FLOW
            if given.flow_id
            else chat_pb2.SESSION_KIND_ASSISTANT
            if given.assistant_id
            else chat_pb2.SESSION_KIND_MODEL
        )
        title = self._check_text(given.title.strip(), "session.title", 255)
        system_prompt = self._check_text(
            given.system_prompt, "session.system_prompt", self.settings.chat_max_system_prompt_chars
        )
        kb_ids = self._check_kb_ids(given.kb_ids)
        meta = self._check_metadata(given.metadata, "session.metadata")
        row = ChatSessionRow(
            id=monotonic_id(), owner_id=me.user_id, title=title, system_prompt=system_prompt, kb_ids=kb_ids, meta=meta
        )
        row.retrieval = check_settings(given.retrieval) if given.HasField("retrieval") else None
        if kind == chat_pb2.SESSION_KIND_FLOW:
            if not given.flow_id:
                raise invalid_argument("session.flow_id", "required for a flow session")
            if given.model_id or system_prompt:
                raise invalid_argument("session.model_id", "a flow session has no model or system prompt")
            flow = await self._flow(given.flow_id)
            row.kind, row.flow_id, row.app_name = "flow", flow.id, flow.name
            row.flow_version_id = flow.current_version_id
        elif kind == chat_pb2.SESSION_KIND_ASSISTANT:
            if given.flow_id or system_prompt or kb_ids:
                raise invalid_argument("session.assistant_id", "an assistant session takes no flow, prompt or bases")
            assistant = await self._assistant(given.assistant_id)
            model = await self._model(given.model_id or assistant.model_id)
            row.kind, row.assistant_id, row.model_id, row.app_name = "agent", assistant.id, model.id, assistant.name
            row.variables = self._check_variables(given.variables, assistant)
        else:
            if me.restriction is not None:
                caller.check_key_resource("model", given.model_id)  # never opened: keys name assistants and flows
            if given.flow_id:
                raise invalid_argument("session.flow_id", "must be empty for a model session")
            model = await self._model(given.model_id)
            row.kind, row.model_id, row.app_name = "model", model.id, model.name
        now = utcnow()
        row.create_time = row.update_time = now
        async with self.db.session() as session:
            session.add(row)
        await self.audit.record("chat.session.create", actor_id=me.user_id, resource_type="session", resource_id=row.id)
        return chat_pb2.CreateSessionResponse(session=session_message(row))

    async def ListSessions(self, request, context):
        me = caller.current()
        owner = request.owner_id or me.user_id
        if owner != me.user_id and not me.is_admin:
            raise permission_denied("listing another user's sessions needs an admin")
        if request.show_deleted and not me.is_admin:
            raise permission_denied("show_deleted needs an admin")
        size = self._page_size(request.page_size)
        S = ChatSessionRow
        conditions = [S.owner_id == owner]
        if not request.show_deleted:
            conditions.append(S.delete_time.is_(None))
        if request.flow_id:
            conditions.append(S.flow_id == request.flow_id)
        if request.model_id:
            conditions.append(S.model_id == request.model_id)
        if request.kind:
            kinds = {chat_pb2.SESSION_KIND_FLOW: "flow", chat_pb2.SESSION_KIND_ASSISTANT: "agent"}
            conditions.append(S.kind == kinds.get(request.kind, "model"))
        if request.keyword.strip():
            pattern = like_pattern(request.keyword.strip())
            M = ChatMessageRow
            conditions.append(
                or_(
                    func.lower(S.title).like(pattern, escape=LIKE_ESCAPE),
                    exists(
                        select(M.id).where(
                            M.session_id == S.id, func.lower(M.content).like(pattern, escape=LIKE_ESCAPE)
                        )
                    ),
                )
            )
        stmt = select(S).where(*conditions)
        position = paging.decode_token(request.page_token)
        if position is not None:
            try:
                after_time, after_id = datetime.fromisoformat(position["t"]), str(position["i"])
            except (KeyError, TypeError, ValueError):
                raise invalid_argument("page_token", "not a page token returned by this API") from None
            stmt = stmt.where(or_(S.update_time < after_time, and_(S.update_time == after_time, S.id < after_id)))
        stmt = stmt.order_by(S.update_time.desc(), S.id.desc()).limit(size + 1)
        async with self.db.session() as session:
            rows = list(await session.scalars(stmt))
            total = await session.scalar(select(func.count()).select_from(S).where(*conditions))
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = paging.encode_token(t=rows[-1].update_time.isoformat(), i=rows[-1].id)
        return chat_pb2.ListSessionsResponse(
            sessions=[session_message(r, show_delete_time=request.show_deleted) for r in rows],
            next_page_token=token,
            total_size=total or 0,
        )

    async def GetSession(self, request, context):
        return chat_pb2.GetSessionResponse(session=session_message(await self._session(request.session_id)))

    async def UpdateSession(self, request, context):
        me = caller.current()
        given = request.session
        row = await self._session(given.id)
        paths = mask_paths(request.update_mask, given, SESSION_FIELDS, "session")
        values: dict[str, Any] = {}
        if "title" in paths:
            values["title"] = self._check_text(given.title.strip(), "session.title", 255)
        if row.kind == "flow" and paths & {"model_id", "system_prompt"}:
            raise invalid_argument("session.model_id", "a flow session has no model or system prompt")
        if "model_id" in paths:
            model = await self._model(given.model_id)
            values["model_id"], values["app_name"] = model.id, model.name
        if "system_prompt" in paths:
            values["system_prompt"] = self._check_text(
                given.system_prompt, "session.system_prompt", self.settings.chat_max_system_prompt_chars
            )
        if "kb_ids" in paths:
            values["kb_ids"] = self._check_kb_ids(given.kb_ids)
        if "metadata" in paths:
            values["meta"] = self._check_metadata(given.metadata, "session.metadata")
        if "retrieval" in paths:
            values["retrieval"] = check_settings(given.retrieval)
        if values:
            values["update_time"] = utcnow()
            async with self.db.session() as session:
                await session.execute(update(ChatSessionRow).where(ChatSessionRow.id == row.id).values(**values))
                row = await session.get(ChatSessionRow, row.id, populate_existing=True) or row
            await self.audit.record(
                "chat.session.update",
                actor_id=me.user_id,
                resource_type="session",
                resource_id=row.id,
                detail={"fields": sorted(paths)},
            )
        return chat_pb2.UpdateSessionResponse(session=session_message(row))

    async def DeleteSession(self, request, context):
        me = caller.current()
        row = await self._session(request.session_id)
        now = utcnow()
        async with self.db.session() as session:
            await session.execute(
                update(ChatSessionRow)
                .where(ChatSessionRow.id == row.id, ChatSessionRow.delete_time.is_(None))
                .values(delete_time=now)
            )
        if self.scratch is not None:
            await self.scratch.remove(session_id=row.id)
        if row.active_turn_id:
            turn = await self.turns.get_row(row.active_turn_id)
            if turn is not None:
                await self.turns.request_stop(turn)
        await self.audit.record("chat.session.delete", actor_id=me.user_id, resource_type="session", resource_id=row.id)
        return chat_pb2.DeleteSessionResponse()

    async def CopySession(self, request, context):
        me = caller.current()
        source = await self._session(request.session_id)
        title = self._check_text((request.title or f"{source.title} (copy)").strip(), "title", 255)
        now = utcnow()
        copy = ChatSessionRow(
            id=monotonic_id(),
            owner_id=me.user_id,
            title=title,
            kind=source.kind,
            model_id=source.model_id,
            flow_id=source.flow_id,
            flow_version_id=source.flow_version_id,
            system_prompt=source.system_prompt,
            kb_ids=list(source.kb_ids or []),
            app_name=source.app_name,
            latest_message_preview=source.latest_message_preview,
            latest_message_time=source.latest_message_time,
            meta=dict(source.meta or {}),
            create_time=now,
            update_time=now,
        )
        M = ChatMessageRow
        async with self.db.session() as session:
            stmt = select(M).where(M.session_id == source.id).order_by(M.id)
            if source.active_turn_id:  # the turn being answered is not part of the copy
                stmt = stmt.where(M.turn_id != source.active_turn_id)
            messages = list(await session.scalars(stmt))
            ids = monotonic_ids(len(messages))
            session.add(copy)
            for new_id, m in zip(ids, messages, strict=True):
                # Feedback (rating, comment, copies) is the original owner's and stays with the original.
                session.add(
                    M(
                        id=new_id,
                        session_id=copy.id,
                        turn_id="",
                        role=m.role,
                        category=m.category,
                        content=m.content,
                        citations=m.citations,
                        attachments=m.attachments,
                        steps=m.steps,
                        input_required=m.input_required,
                        status=m.status,
                        error=m.error,
                        finish_reason=m.finish_reason,
                        prompt_tokens=m.prompt_tokens,
                        completion_tokens=m.completion_tokens,
                        model_id=m.model_id,
                        meta=m.meta,
                        create_time=m.create_time,
                        update_time=now,
                    )
                )
            copy.message_count = len(messages)
        if self.scratch is not None:
            await self.scratch.copy(source.id, copy.id, {m.id: i for i, m in zip(ids, messages, strict=True)})
        await self.audit.record(
            "chat.session.copy",
            actor_id=me.user_id,
            resource_type="session",
            resource_id=copy.id,
            detail={"source_session_id": source.id, "messages": len(messages)},
        )
        return chat_pb2.CopySessionResponse(session=session_message(copy))
