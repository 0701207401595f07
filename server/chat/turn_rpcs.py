"""Chat turn RPCs: Chat (start a turn, or re-attach to a retried one, and stream it), StreamTurnEvents and
StopTurn; the prompt of a model, assistant or flow turn is built here and the turn itself runs in turns.py.
"""

from __future__ import annotations

import asyncio

import grpc
from sqlalchemy import Integer, bindparam, func, literal, select

from typecase.server.chat import context as ctx
from typecase.server.chat.agent_turn import AgentTurn
from typecase.server.chat.agent_turn import history as agent_history
from typecase.server.chat.agent_turn import system_prompt as agent_system_prompt
from typecase.server.chat.attachment_rpcs import AttachmentRpcs
from typecase.server.chat.attachments import for_model
from typecase.server.chat.convert import struct_dict
from typecase.server.chat.models import ChatMessageRow, ChatSessionRow, ChatTurnRow
from typecase.server.chat.rpc_base import ChatBase, turn_in_progress
from typecase.server.chat.scratch import SESSION_WITH_FLAG, Scratch
from typecase.server.chat.turns import FlowTurn, NewTurn, TurnInProgress
from typecase.server.infra.sql import transient
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import assistant_pb2, chat_pb2, llm_pb2

MAX_REQUEST_ID = 128

# Built once (plain columns: no ORM objects): every turn start runs them, and building a statement cost more than
# executing it.
_M = ChatMessageRow
_NEWEST_MESSAGES = (
    select(_M.id, _M.category, _M.status, _M.content)
    .where(_M.session_id == bindparam("session_id"))
    .order_by(_M.id.desc())
    .limit(bindparam("window", type_=Integer))  # typed as .limit(n) would (LIMIT $2::INTEGER)
)
_SESSION = select(ChatSessionRow.__table__, literal(False).label("has_scratch_rows")).where(
    ChatSessionRow.id == bindparam("session_id")
)  # without a scratch index (scratch.SESSION_WITH_FLAG with one)
_RETRIED_TURN = select(ChatTurnRow.__table__).where(
    ChatTurnRow.session_id == bindparam("session_id"), ChatTurnRow.request_id == bindparam("request_id")
)
_ANSWERED_COUNT = (
    select(func.count())
    .select_from(_M)
    .where(
        _M.session_id == bindparam("session_id"),
        _M.category == "answer",
        _M.status.in_(("complete", "stopped")),
    )
)


class TurnRpcs(AttachmentRpcs, ChatBase):
    # -- turns -----------------------------------------------------------------------------------------------
    def _history(self, rows, total: int) -> tuple[list[ctx.HistoryTurn], int, str | None]:
        """From the newest messages (_NEWEST_MESSAGES) and, when they filled the window, the session's count of
        answered turns: the newest complete or stopped question/answer pairs (oldest first), how many older ones
        exist, and the session's newest message id (new messages must sort after it)."""
        full = len(rows) >= self._window()
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

    def _window(self) -> int:
        return 2 * self.settings.chat_max_context_turns + 2

    async def Chat(self, request, context):
        caller.current()  # authenticated (visibility is checked on the session)
        question = self._check_text(request.content, "content", self.settings.chat_max_question_chars)
        if len(request.request_id) > MAX_REQUEST_ID:
            raise invalid_argument("request_id", f"at most {MAX_REQUEST_ID} characters")
        row = history = None
        session_id = request.session_id
        # Everything a turn start reads, together (Database.read_together: one trip to SQLite's reader thread, one
        # pooled checkout on PostgreSQL): the session row with its scratch flag, a retry's turn, the history window.
        # The turn and the history are read before the session is known to be visible and are dropped unless it is.
        queries = [
            (SESSION_WITH_FLAG if self.scratch is not None else _SESSION, {"session_id": session_id}),
            (_NEWEST_MESSAGES, {"session_id": session_id, "window": self._window()}),
        ]
        if request.request_id:  # a retry: re-attach to the turn this request already started
            queries.append((_RETRIED_TURN, {"session_id": session_id, "request_id": request.request_id}))
        found, newest, *retried = await self.db.read_together(queries)
        loaded, scratch = Scratch.session_of(found[0] if found else None)
        parent = self._visible_session(loaded, session_id)
        if retried and retried[0]:
            row = transient(ChatTurnRow, retried[0][0]._asdict())
        else:
            if not question.strip() and not (parent.kind == "flow" and request.HasField("input")):
                raise invalid_argument("content", "must not be empty")
            # Older turns are counted only when the window is full (short sessions, the common case, need none).
            total = 0
            if len(newest) >= self._window():
                async with self.db.reading() as db:
                    total = await db.scalar(_ANSWERED_COUNT, {"session_id": parent.id}) or 0
            history = self._history(newest, total)
        if row is None:
            if parent.kind == "flow":
                row = await self._start_flow_turn(request, parent, question, history)
            elif parent.kind == "agent":
                row = await self._start_agent_turn(request, parent, question, history, scratch)
            else:
                row = await self._start_turn(request, parent, question, history, scratch=scratch)
        async for message in self._read(row, 0, request.stop_on_disconnect or self.settings.chat_stop_on_disconnect):
            yield message

    async def _start_agent_turn(
        self, request, parent: ChatSessionRow, question: str, history, scratch: bool
    ) -> ChatTurnRow:
        """A turn of an assistant session: the assistant as it is now (edits apply to the next turn), its
        instructions rendered, earlier tool steps in the history, the agent loop as the answer."""
        assistant = await self._assistant(parent.assistant_id)
        assert self.agents is not None  # else _assistant refused
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
            scratch=scratch,
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
        scratch: bool = True,
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
        read_chars = self.scratch.read_chars if self.scratch else self.settings.chat_attachment_max_chars
        attached = await for_model(list(request.attachments), model, self.documents, read_chars)
        room = self._room_chars(system_prompt, question, window, limits)
        indexed = await self.scratch.take(attached, question, room, parent.id) if self.scratch else []
        asked = attached.question(question, room)
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
            scratch=scratch or bool(indexed),
        )
        try:
            # Shielded: once asked, the turn starts even if this caller goes away meanwhile.
            row, _ = await asyncio.shield(self.turns.begin(new))
        except BaseException as failed:
            if self.scratch is not None:
                await self.scratch.drop(indexed)
            if isinstance(failed, TurnInProgress):
                raise turn_in_progress(failed.turn_id) from None
            raise
        if self.scratch is not None:
            await self.scratch.assign(indexed, row.question_message_id)
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
