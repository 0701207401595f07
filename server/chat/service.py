"""ChatService: sessions, messages and feedback in SQL; chat turns run by turns.py and read from their event log.

Ownership: a user sees and changes only their own sessions (and those sessions' messages and turns); admins see
everyone's. Anything not visible is NOT_FOUND. Other domains are reached through their service objects: the LLM
service for models and generation, the knowledge service (when present) for retrieval, the flow service (when
present) for flow sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Any

import grpc
from sqlalchemy import and_, delete, exists, func, or_, select, update

from typecase.server.chat import context as ctx
from typecase.server.chat.agent_turn import AgentSource, AgentTurn
from typecase.server.chat.agent_turn import history as agent_history
from typecase.server.chat.agent_turn import resume as agent_resume
from typecase.server.chat.agent_turn import system_prompt as agent_system_prompt
from typecase.server.chat.attachments import DocumentReader, for_model, stored_body
from typecase.server.chat.convert import message_message, session_message, struct_dict, to_dict
from typecase.server.chat.ids import monotonic_id, monotonic_ids
from typecase.server.chat.models import COMPLETE, STREAMING, ChatMessageRow, ChatSessionRow, ChatTurnRow
from typecase.server.chat.search_query import check_settings
from typecase.server.chat.turns import FlowTurn, NewTurn, TurnInProgress, Turns, preview, turn_not_found
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.fields import LIKE_ESCAPE, like_pattern, mask_paths
from typecase.server.rpc.ports import ChatFlows, Generation, KnowledgeSearch
from typecase.v1 import assistant_pb2, chat_pb2, chat_pb2_grpc, flow_pb2, llm_pb2

log = logging.getLogger("typecase.chat")

SESSION_FIELDS = {"title", "model_id", "system_prompt", "kb_ids", "metadata", "retrieval"}
MESSAGE_FIELDS = {"content", "metadata"}
MAX_REQUEST_ID = 128
RATINGS = {chat_pb2.FEEDBACK_ACTION_LIKE: "like", chat_pb2.FEEDBACK_ACTION_DISLIKE: "dislike"}


def permission_denied(message: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", message)


def session_deleted(session_id: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.NOT_FOUND, "SESSION_DELETED", f"session {session_id!r} was deleted", {"session_id": session_id}
    )


def turn_in_progress(turn_id: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "TURN_IN_PROGRESS",
        "this session is answering a question: stop that turn or wait for it to end",
        {"turn_id": turn_id},
    )


def llm_unavailable() -> TypecaseError:
    return TypecaseError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "no LLM service is running on this server")


def _app_of(row: ChatSessionRow) -> tuple[str, str]:
    """The resource a restricted API key must name to use this session: its assistant, flow or (never) model."""
    if row.assistant_id:
        return "assistant", row.assistant_id
    if row.flow_id:
        return "flow", row.flow_id
    return "model", row.model_id or ""


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(
        self,
        db: Database,
        cache,
        llm: Generation | None,
        audit,
        settings,
        *,
        storage=None,
        knowledge: KnowledgeSearch | None = None,
        flow: ChatFlows | None = None,
        documents: DocumentReader | None = None,
        agents: AgentSource | None = None,
    ):
        self.db = db
        self.documents = documents
        self.llm = llm
        self.audit = audit
        self.settings = settings
        self.storage = storage
        self.knowledge = knowledge
        self.flow = flow
        self.agents = agents
        self.turns = Turns(db, cache, llm, settings, knowledge=knowledge, flow=flow)
        if agents is not None:
            self.turns.agent_resume = self._resume_agent_turn
        self._detached: set[asyncio.Task] = set()
        self._models: dict[str, tuple[float, llm_pb2.Model]] = {}

    async def start(self) -> None:
        await self.turns.start()

    async def stop(self) -> None:
        await self.turns.stop()

    # -- helpers ---------------------------------------------------------------------------------------------
    def _page_size(self, requested: int) -> int:
        return paging.page_size(requested, self.settings.chat_page_size_default, self.settings.chat_page_size_max)

    def _check_metadata(self, value, field: str) -> dict[str, Any]:
        data = struct_dict(value)
        if len(json.dumps(data, separators=(",", ":")).encode()) > self.settings.chat_max_metadata_bytes:
            raise invalid_argument(field, f"must be at most {self.settings.chat_max_metadata_bytes} bytes as JSON")
        return data

    def _check_text(self, text: str, field: str, limit: int, required: bool = False) -> str:
        if required and not text.strip():
            raise invalid_argument(field, "must not be empty")
        if len(text) > limit:
            raise invalid_argument(field, f"must be at most {limit} characters")
        return text

    async def _session(self, session_id: str, *, allow_deleted: bool = False, db=None) -> ChatSessionRow:
        if not session_id:
            raise invalid_argument("session_id", "required")
        if db is not None:
            row = await db.get(ChatSessionRow, session_id)
        else:
            async with self.db.session() as session:
                row = await session.get(ChatSessionRow, session_id)
        if row is None:
            raise not_found("session", session_id)
        caller.check_visible("session", session_id, row.owner_id)
        if caller.current().restriction is not None:  # a published app's key reaches only its app's sessions
            caller.check_key_resource(*_app_of(row))
        if row.delete_time is not None and not allow_deleted:
            raise session_deleted(session_id)
        return row

    async def _message(self, message_id: str) -> tuple[ChatMessageRow, ChatSessionRow]:
        if not message_id:
            raise invalid_argument("message_id", "required")
        async with self.db.session() as session:
            row = await session.get(ChatMessageRow, message_id)
            parent = await session.get(ChatSessionRow, row.session_id) if row is not None else None
        if row is None or parent is None:
            raise not_found("message", message_id)
        caller.check_visible("message", message_id, parent.owner_id)
        if parent.delete_time is not None:
            raise session_deleted(parent.id)
        return row, parent

    async def _turn(self, turn_id: str) -> ChatTurnRow:
        if not turn_id:
            raise invalid_argument("turn_id", "required")
        row = await self.turns.get_row(turn_id)
        if row is None or not caller.can_see(row.owner_id):
            raise turn_not_found(turn_id)
        return row

    async def _model(self, model_id: str, *, cached: bool = False) -> llm_pb2.Model:
        """The model (default: the chat default). `cached`: a lookup up to chat_model_cache_seconds old will do
        (turn starts; the LLM service itself refuses an offline model when called)."""
        if self.llm is None:
            raise llm_unavailable()
        if not model_id:
            model_id = await self.llm.default_model_id("chat")
            if not model_id:
                raise TypecaseError(
                    grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", "no model given and no default chat model is set"
                )
        now = time.monotonic()
        if cached and (hit := self._models.get(model_id)) is not None and hit[0] > now:
            return hit[1]
        model = await self.llm.get_model(model_id)
        if len(self._models) > 1000:
            self._models.clear()
        self._models[model_id] = (now + self.settings.chat_model_cache_seconds, model)
        return model

    async def _flow(self, flow_id: str) -> flow_pb2.Flow:
        if self.flow is None:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "FLOW_NOT_PUBLISHED",
                "flow sessions need the flow service, which is not running on this server",
                {"flow_id": flow_id},
            )
        flow = await self.flow.get_flow(flow_id)
        if flow.status != flow_pb2.FLOW_STATUS_ONLINE:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "FLOW_NOT_PUBLISHED",
                f"flow {flow_id!r} is not online",
                {"flow_id": flow_id},
            )
        return flow

    def _check_kb_ids(self, kb_ids) -> list[str]:
        ids = list(dict.fromkeys(kb_ids))
        if len(ids) > self.settings.chat_max_kb_ids:
            raise invalid_argument("session.kb_ids", f"at most {self.settings.chat_max_kb_ids} knowledge bases")
        if any(not kb or len(kb) > 26 for kb in ids):
            raise invalid_argument("session.kb_ids", "not knowledge base ids")
        return ids

    def _detach(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

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
                row = await session.get(ChatSessionRow, row.id, populate_existing=True)
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
        await self.audit.record(
            "chat.session.copy",
            actor_id=me.user_id,
            resource_type="session",
            resource_id=copy.id,
            detail={"source_session_id": source.id, "messages": len(messages)},
        )
        return chat_pb2.CopySessionResponse(session=session_message(copy))

    # -- messages --------------------------------------------------------------------------------------------
    async def ListMessages(self, request, context):
        me = caller.current()
        parent = await self._session(request.session_id, allow_deleted=me.is_admin)
        size = self._page_size(request.page_size)
        M = ChatMessageRow
        stmt = select(M).where(M.session_id == parent.id)
        if request.turn_id:
            stmt = stmt.where(M.turn_id == request.turn_id)
        position = paging.decode_token(request.page_token)
        if position is not None:
            if not isinstance(position.get("i"), str) or bool(position.get("d")) != request.newest_first:
                raise invalid_argument("page_token", "not a page token for this listing (direction changed?)")
            stmt = stmt.where(M.id < position["i"] if request.newest_first else M.id > position["i"])
        stmt = stmt.order_by(M.id.desc() if request.newest_first else M.id).limit(size + 1)
        async with self.db.session() as session:
            rows = list(await session.scalars(stmt))
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = paging.encode_token(i=rows[-1].id, d=request.newest_first)
        return chat_pb2.ListMessagesResponse(messages=[message_message(r) for r in rows], next_page_token=token)

    async def AddMessages(self, request, context):
        me = caller.current()
        parent = await self._session(request.session_id)
        pairs = request.pairs
        if not pairs:
            raise invalid_argument("pairs", "at least one question/answer pair")
        if len(pairs) > self.settings.chat_max_add_pairs:
            raise invalid_argument("pairs", f"at most {self.settings.chat_max_add_pairs} pairs per call")
        limit = self.settings.chat_max_message_chars
        prepared = []
        for i, pair in enumerate(pairs):
            question = self._check_text(pair.question, f"pairs[{i}].question", limit, required=True)
            answer = self._check_text(pair.answer, f"pairs[{i}].answer", limit, required=True)
            meta = self._check_metadata(pair.metadata, f"pairs[{i}].metadata")
            prepared.append((question, answer, [to_dict(c) for c in pair.citations], meta))
        now = utcnow()
        M = ChatMessageRow
        rows: list[ChatMessageRow] = []
        async with self.db.session() as session:
            await session.execute(
                update(ChatSessionRow)
                .where(ChatSessionRow.id == parent.id)
                .values(
                    message_count=ChatSessionRow.message_count + 2 * len(prepared),
                    latest_message_preview=preview(prepared[-1][1], self.settings.chat_preview_chars),
                    latest_message_time=now,
                    update_time=now,
                )
            )
            newest = await session.scalar(select(func.max(M.id)).where(M.session_id == parent.id))
            ids = iter(monotonic_ids(2 * len(prepared), after=newest))
            for question, answer, citations, meta in prepared:
                rows.append(
                    M(
                        id=next(ids),
                        session_id=parent.id,
                        turn_id="",
                        role="user",
                        category="question",
                        content=question,
                        status=COMPLETE,
                        meta=meta,
                        create_time=now,
                        update_time=now,
                    )
                )
                rows.append(
                    M(
                        id=next(ids),
                        session_id=parent.id,
                        turn_id="",
                        role="assistant",
                        category="answer",
                        content=answer,
                        citations=citations,
                        status=COMPLETE,
                        meta=meta,
                        create_time=now,
                        update_time=now,
                    )
                )
            session.add_all(rows)
        await self.audit.record(
            "chat.messages.add",
            actor_id=me.user_id,
            resource_type="session",
            resource_id=parent.id,
            detail={"pairs": len(prepared)},
        )
        return chat_pb2.AddMessagesResponse(messages=[message_message(r) for r in rows])

    async def UpdateMessage(self, request, context):
        me = caller.current()
        given = request.message
        row, parent = await self._message(given.id)
        if row.status == STREAMING:
            raise turn_in_progress(row.turn_id)
        paths = mask_paths(request.update_mask, given, MESSAGE_FIELDS, "message")
        values: dict[str, Any] = {}
        if "content" in paths:
            values["content"] = self._check_text(given.content, "message.content", self.settings.chat_max_message_chars)
        if "metadata" in paths:
            values["meta"] = self._check_metadata(given.metadata, "message.metadata")
        if values:
            values["update_time"] = utcnow()
            M = ChatMessageRow
            async with self.db.session() as session:
                changed = await session.execute(update(M).where(M.id == row.id, M.status != STREAMING).values(**values))
                if changed.rowcount != 1:
                    raise turn_in_progress(row.turn_id)
                if "content" in values:
                    newest = await session.scalar(select(func.max(M.id)).where(M.session_id == parent.id))
                    if newest == row.id:
                        await session.execute(
                            update(ChatSessionRow)
                            .where(ChatSessionRow.id == parent.id)
                            .values(latest_message_preview=preview(values["content"], self.settings.chat_preview_chars))
                        )
                row = await session.get(M, row.id, populate_existing=True)
            await self.audit.record(
                "chat.message.update",
                actor_id=me.user_id,
                resource_type="message",
                resource_id=row.id,
                detail={"fields": sorted(paths)},
            )
        return chat_pb2.UpdateMessageResponse(message=message_message(row))

    async def DeleteMessage(self, request, context):
        me = caller.current()
        row, parent = await self._message(request.message_id)
        if row.status == STREAMING:
            raise turn_in_progress(row.turn_id)
        S, M = ChatSessionRow, ChatMessageRow
        async with self.db.session() as session:
            await self._lock_session(session, parent.id)
            current = await session.get(M, row.id, populate_existing=True)
            if current is None:
                raise not_found("message", row.id)
            if current.status == STREAMING:
                raise turn_in_progress(current.turn_id)
            await session.execute(delete(M).where(M.id == current.id))
            await session.execute(
                update(S)
                .where(S.id == parent.id)
                .values(
                    message_count=S.message_count - 1,
                    like_count=S.like_count - (1 if current.rating == "like" else 0),
                    dislike_count=S.dislike_count - (1 if current.rating == "dislike" else 0),
                    copied_count=S.copied_count - current.copied_count,
                )
            )
        await self.audit.record("chat.message.delete", actor_id=me.user_id, resource_type="message", resource_id=row.id)
        return chat_pb2.DeleteMessageResponse()

    async def _lock_session(self, session, session_id: str) -> None:
        """Serialise changes to one session's counters: a no-op write takes the row lock (PostgreSQL, MySQL) or
        the database write lock (SQLite) before anything is read."""
        S = ChatSessionRow
        await session.execute(update(S).where(S.id == session_id).values(message_count=S.message_count))

    async def SetMessageFeedback(self, request, context):
        me = caller.current()
        action = request.action
        if action not in (
            chat_pb2.FEEDBACK_ACTION_LIKE,
            chat_pb2.FEEDBACK_ACTION_DISLIKE,
            chat_pb2.FEEDBACK_ACTION_CANCEL,
            chat_pb2.FEEDBACK_ACTION_COPIED,
        ):
            raise invalid_argument("action", "one of LIKE, DISLIKE, CANCEL, COPIED")
        comment = self._check_text(request.comment.strip(), "comment", self.settings.chat_max_question_chars)
        row, parent = await self._message(request.message_id)
        if row.category != "answer":
            raise invalid_argument("message_id", "feedback applies to answers only")
        async with self.db.session() as session:
            await self._lock_session(session, parent.id)
            message = await session.get(ChatMessageRow, row.id, populate_existing=True)
            counts = await session.get(ChatSessionRow, parent.id, populate_existing=True)
            if message is None or counts is None:
                raise not_found("message", row.id)
            old = message.rating
            if action == chat_pb2.FEEDBACK_ACTION_COPIED:
                message.copied_count += 1
                counts.copied_count += 1
            else:
                new = RATINGS.get(action, "")
                if old != new:
                    if old == "like":
                        counts.like_count -= 1
                    elif old == "dislike":
                        counts.dislike_count -= 1
                    if new == "like":
                        counts.like_count += 1
                    elif new == "dislike":
                        counts.dislike_count += 1
                message.rating = new
                message.feedback_comment = comment if new else ""
            message.update_time = utcnow()
            await session.flush()
            result = message_message(message)
        await self.audit.record(
            "chat.message.feedback",
            actor_id=me.user_id,
            resource_type="message",
            resource_id=row.id,
            detail={"action": chat_pb2.FeedbackAction.Name(action).removeprefix("FEEDBACK_ACTION_").lower()},
        )
        return chat_pb2.SetMessageFeedbackResponse(message=result)

    # -- turns -----------------------------------------------------------------------------------------------
    async def _history(self, session_id: str, session) -> tuple[list[ctx.HistoryTurn], int, str | None]:
        """The newest complete or stopped question/answer pairs (oldest first), how many older ones exist, and the
        session's newest message id (new messages must sort after it)."""
        M = ChatMessageRow
        window = 2 * self.settings.chat_max_context_turns + 2
        answered = and_(M.session_id == session_id, M.category == "answer", M.status.in_(("complete", "stopped")))
        rows = (
            await session.execute(  # plain columns: no ORM objects on every turn's path
                select(M.id, M.category, M.status, M.content)
                .where(M.session_id == session_id)
                .order_by(M.id.desc())
                .limit(window)
            )
        ).all()
        # Count older turns only when the window is full (short sessions, the common case, need no count).
        full = len(rows) >= window
        total = (await session.scalar(select(func.count()).select_from(M).where(answered)) or 0) if full else 0
        newest = rows[0].id if rows else None
        history: list[ctx.HistoryTurn] = []
        question = None
        for row in reversed(rows):
            if row.category == "question":
                question = row
            elif row.category == "answer" and question is not None:
                if row.status in ("complete", "stopped") and row.content:
                    history.append(ctx.HistoryTurn(question.content, row.content))
                question = None
        if self.settings.chat_max_context_turns == 0:
            history = []
        return history, (max(0, total - len(history)) if full else 0), newest

    def _check_attachments(self, request) -> None:
        if len(request.attachments) > self.settings.chat_max_attachments:
            raise invalid_argument("attachments", f"at most {self.settings.chat_max_attachments} files")
        for i, attachment in enumerate(request.attachments):
            field = f"attachments[{i}]"
            sources = [bool(attachment.url), bool(attachment.file_id), bool(attachment.data)]
            if sum(sources) != 1:
                raise invalid_argument(field, "set exactly one of url, file_id or data")
            if not attachment.name:
                raise invalid_argument(f"{field}.name", "required")
            if attachment.name in (".", ".."):  # would name a directory in the object key below
                raise invalid_argument(f"{field}.name", "must be a file name, not '.' or '..'")
            if attachment.data:
                if len(attachment.data) > self.settings.chat_max_attachment_bytes:
                    raise TypecaseError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "PAYLOAD_TOO_LARGE",
                        f"{field}.data: at most {self.settings.chat_max_attachment_bytes} bytes",
                        {"field": field},
                    )
                if self.storage is None:
                    raise invalid_argument(f"{field}.data", "inline files are not accepted here; give a url")

    async def _attachments(self, request, session_id: str) -> list[dict[str, Any]]:
        self._check_attachments(request)
        stored = []
        for attachment in request.attachments:
            item = chat_pb2.Attachment()
            item.CopyFrom(attachment)
            if attachment.data:
                key = f"chat/{session_id}/{monotonic_id()}/{attachment.name.replace('/', '_')[:200]}"
                await self.storage.put(key, bytes(attachment.data), content_type=attachment.mime_type or None)
                item.ClearField("data")
                item.url = f"object:{key}"
                item.size_bytes = len(attachment.data)
            stored.append(to_dict(item))
        return stored

    async def DownloadAttachment(self, request, context):
        row, _ = await self._message(request.message_id)  # another user's message is NOT_FOUND
        body = stored_body(
            self.storage, list(row.attachments or []), request.index, row.id, request.range, request.inline, context
        )
        async for message in body:
            yield message

    async def Chat(self, request, context):
        caller.current()  # authenticated (visibility is checked on the session)
        question = self._check_text(request.content, "content", self.settings.chat_max_question_chars)
        if len(request.request_id) > MAX_REQUEST_ID:
            raise invalid_argument("request_id", f"at most {MAX_REQUEST_ID} characters")
        row = history = None
        async with self.db.session() as db:  # one connection for everything a turn start reads
            parent = await self._session(request.session_id, db=db)
            if request.request_id:  # a retry: re-attach to the turn this request already started
                row = (
                    await db.scalars(
                        select(ChatTurnRow).where(
                            ChatTurnRow.session_id == parent.id, ChatTurnRow.request_id == request.request_id
                        )
                    )
                ).first()
            if row is None:
                if not question.strip() and not (parent.kind == "flow" and request.HasField("input")):
                    raise invalid_argument("content", "must not be empty")
                history = await self._history(parent.id, db)
        if row is None:
            if parent.kind == "flow":
                row = await self._start_flow_turn(request, parent, question, history)
            elif parent.kind == "agent":
                row = await self._start_agent_turn(request, parent, question, history)
            else:
                row = await self._start_turn(request, parent, question, history)
        async for message in self._read(row, 0, request.stop_on_disconnect or self.settings.chat_stop_on_disconnect):
            yield message

    async def _assistant(self, assistant_id: str) -> assistant_pb2.Assistant:
        if self.agents is None:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "ASSISTANT_NOT_PUBLISHED",
                "assistant sessions need the assistants service, which is not running on this server",
            )
        if not assistant_id:
            raise invalid_argument("session.assistant_id", "required for an assistant session")
        return await self.agents.assistant(assistant_id)

    def _check_variables(self, given, assistant: assistant_pb2.Assistant) -> dict[str, str]:
        names = {v.name for v in assistant.variables}
        for name, value in given.items():
            if name not in names:
                raise invalid_argument(f"session.variables[{name}]", "the assistant has no such variable")
            self._check_text(value, f"session.variables[{name}]", self.settings.assistants_max_instructions_chars)
        return dict(given)

    async def _resume_agent_turn(self, row: ChatTurnRow, turn, events) -> None:
        async with self.db.session() as session:
            parent = await session.get(ChatSessionRow, row.session_id)
        await agent_resume(self.agents, parent.assistant_id if parent else "", turn, events)

    async def _start_agent_turn(self, request, parent: ChatSessionRow, question: str, history) -> ChatTurnRow:
        """A turn of an assistant session: the assistant as it is now (edits apply to the next turn), its
        instructions rendered, earlier tool steps in the history, the agent loop as the answer."""
        assistant = await self._assistant(parent.assistant_id)
        turns, older, newest = history
        room = self.settings.chat_default_context_tokens * self.settings.chat_chars_per_token / 2
        turns = await agent_history(self.db, parent.id, turns, self.settings.agent_history_result_chars, int(room))
        system = agent_system_prompt(assistant, parent.variables or {}, parent.owner_id)
        settings = self.agents.settings(assistant, parent.model_id, parent.owner_id)
        toolbox = await self.agents.toolbox(assistant)
        before = assistant.knowledge_mode == assistant_pb2.KNOWLEDGE_MODE_BEFORE_FIRST_STEP
        agent = AgentTurn(toolbox, settings, retrieve_first=before)
        return await self._start_turn(
            request,
            parent,
            question,
            (turns, older, newest),
            system_prompt=system,
            kb_ids=list(assistant.kb_ids) if before else [],
            config=settings.config,
            agent=agent,
        )

    async def _start_turn(
        self,
        request,
        parent: ChatSessionRow,
        question: str,
        history,
        *,
        system_prompt: str | None = None,
        kb_ids: list[str] | None = None,
        config: llm_pb2.GenerationConfig | None = None,
        agent: AgentTurn | None = None,
    ) -> ChatTurnRow:
        system_prompt = parent.system_prompt if system_prompt is None else system_prompt
        model = await self._model(request.model_id if request.HasField("model_id") else parent.model_id, cached=True)
        if not model.online:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "MODEL_OFFLINE",
                f"model {model.name!r} is offline",
                {"model_id": model.id},
            )
        max_tokens = request.max_tokens if request.HasField("max_tokens") else None
        if max_tokens is not None and max_tokens <= 0:
            raise invalid_argument("max_tokens", "must be positive")
        window = model.context_length or self.settings.chat_default_context_tokens
        limits = ctx.Limits(
            context_tokens=window,
            reserve_output_tokens=ctx.output_reserve(
                max_tokens, model.max_output_tokens, self.settings.chat_reserve_output_tokens, window
            ),
            default_context_tokens=self.settings.chat_default_context_tokens,
            max_turns=self.settings.chat_max_context_turns,
            chars_per_token=self.settings.chat_chars_per_token,
        )
        history, older, newest = history
        self._check_attachments(request)  # before any of them is read
        attached = await for_model(
            list(request.attachments), model, self.documents, self.settings.chat_attachment_max_chars
        )
        asked = attached.question(question, self._room_chars(system_prompt, question, window, limits))
        prompt = ctx.build_prompt(system_prompt, history, asked, limits, older_turns=older)
        if attached.images:
            prompt.messages[-1] = attached.message(asked)
        config = llm_pb2.GenerationConfig() if config is None else config
        if agent is not None:
            agent.settings.model_id = model.id
            agent.settings.config = config
        if request.HasField("temperature"):
            if not 0 <= request.temperature <= 2:
                raise invalid_argument("temperature", "must be between 0 and 2")
            config.temperature = request.temperature
        if max_tokens is not None:
            config.max_tokens = max_tokens
        new = NewTurn(
            session_id=parent.id,
            owner_id=parent.owner_id,
            question=question,
            attachments=await self._attachments(request, parent.id),
            request_id=request.request_id or None,
            model_id=model.id,
            prompt=prompt,
            config=config,
            kb_ids=list(parent.kb_ids or []) if kb_ids is None else kb_ids,
            retrieval=parent.retrieval,
            needs_title=self.settings.chat_auto_title and not parent.title,
            newest_message_id=newest,
            agent=agent,
        )
        try:
            # Shielded: once asked, the turn starts even if this caller goes away meanwhile.
            row, _ = await asyncio.shield(self.turns.begin(new))
        except TurnInProgress as busy:
            raise turn_in_progress(busy.turn_id) from None
        return row

    @staticmethod
    def _room_chars(system_prompt: str, question: str, window: int, limits: ctx.Limits) -> int:
        """How many characters the question and its attached documents may take: the context left once the
        system prompt and the answer's reserve are in, less a tenth for the estimate's error."""
        budget = window - limits.reserve_output_tokens - 2 * ctx.MESSAGE_OVERHEAD_TOKENS
        budget -= ctx.estimate_tokens(system_prompt, limits.chars_per_token) if system_prompt else 0
        return max(len(question), int(budget * limits.chars_per_token * 0.9))

    async def _start_flow_turn(self, request, parent: ChatSessionRow, question: str, history) -> ChatTurnRow:
        await self._flow(parent.flow_id)  # online, and visible to the caller: else an RPC error, no turn
        turns, _, newest = history
        limit = self.settings.chat_max_context_turns
        attachments = await self._attachments(request, parent.id)
        flow = FlowTurn(
            attachments=attachments,
            flow_id=parent.flow_id,
            input_node_id=request.input_node_id,
            input=struct_dict(request.input) if request.HasField("input") else None,
            history=[
                m
                for t in (turns[-limit:] if limit else [])
                for m in ({"role": "user", "content": t.question}, {"role": "assistant", "content": t.answer})
            ],
        )
        new = NewTurn(
            session_id=parent.id,
            owner_id=parent.owner_id,
            question=question,
            attachments=attachments,
            request_id=request.request_id or None,
            model_id="",
            prompt=ctx.Prompt(),
            config=llm_pb2.GenerationConfig(),
            kb_ids=[],
            needs_title=self.settings.chat_auto_title and not parent.title and bool(question.strip()),
            newest_message_id=newest,
            flow=flow,
        )
        try:
            row, _ = await asyncio.shield(self.turns.begin(new))
        except TurnInProgress as busy:
            raise turn_in_progress(busy.turn_id) from None
        return row

    async def _read(self, row: ChatTurnRow, after_seq: int, stop_on_disconnect: bool):
        ended = False
        try:
            async for entry in self.turns.follow(row, after_seq):
                ended = entry.terminal
                yield entry.message if entry.message is not None else chat_pb2.ChatResponse.FromString(entry.payload)
        finally:
            if not ended and stop_on_disconnect:
                self._detach(self.turns.request_stop(row))

    async def StreamTurnEvents(self, request, context):
        row = await self._turn(request.turn_id)
        if request.after_seq < 0:
            raise invalid_argument("after_seq", "must not be negative")
        async for entry in self.turns.follow(row, request.after_seq):
            yield chat_pb2.StreamTurnEventsResponse.FromString(entry.payload)

    async def StopTurn(self, request, context):
        me = caller.current()
        row = await self._turn(request.turn_id)
        stopped = await self.turns.request_stop(row)
        if stopped:
            await self.turns.wait_ended(row.id, self.settings.chat_stop_wait_seconds)
            await self.audit.record("chat.turn.stop", actor_id=me.user_id, resource_type="turn", resource_id=row.id)
        return chat_pb2.StopTurnResponse(stopped=stopped)
