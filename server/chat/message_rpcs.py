"""Chat message RPCs: list, add (imported question/answer pairs), edit, delete and rate messages; a session's
counters (messages, likes, copies) change under the session's lock.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update

from typecase.server.chat.convert import message_message, to_dict
from typecase.server.chat.ids import monotonic_ids
from typecase.server.chat.models import COMPLETE, STREAMING, ChatMessageRow, ChatSessionRow
from typecase.server.chat.rpc_base import ChatBase, turn_in_progress
from typecase.server.chat.turns import preview
from typecase.server.infra.sql import utcnow
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import invalid_argument, not_found
from typecase.server.rpc.fields import mask_paths
from typecase.v1 import chat_pb2

MESSAGE_FIELDS = {"content", "metadata"}
RATINGS = {chat_pb2.FEEDBACK_ACTION_LIKE: "like", chat_pb2.FEEDBACK_ACTION_DISLIKE: "dislike"}


class MessageRpcs(ChatBase):
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
                changed = cast(
                    CursorResult,
                    await session.execute(update(M).where(M.id == row.id, M.status != STREAMING).values(**values)),
                )
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
                row = await session.get(M, row.id, populate_existing=True) or row
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
        if self.scratch is not None:
            await self.scratch.remove(message_id=row.id)
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
