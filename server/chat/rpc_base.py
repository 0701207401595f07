"""The base of ChatService's RPC groups: its dependencies, visibility-checked look-ups and field checks.

Ownership: a user sees and changes only their own sessions (and those sessions' messages and turns); admins see
everyone's. Anything not visible is NOT_FOUND. Other domains are reached through their service objects: the LLM
service for models and generation, the knowledge service (when present) for retrieval, the flow service (when
present) for flow sessions, the assistants service (when present) for assistant sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import grpc

from typecase.server.chat import scratch
from typecase.server.chat.agent_turn import AgentSource
from typecase.server.chat.agent_turn import resume as agent_resume
from typecase.server.chat.attachments import DocumentReader
from typecase.server.chat.convert import struct_dict
from typecase.server.chat.models import ChatMessageRow, ChatSessionRow, ChatTurnRow
from typecase.server.chat.turns import Turns, turn_not_found
from typecase.server.infra.sql import Database
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.ports import ChatFlows, Embedding, Generation, KnowledgeSearch
from typecase.v1 import assistant_pb2, chat_pb2_grpc, flow_pb2, llm_pb2

log = logging.getLogger("typecase.chat")


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


class ChatBase(chat_pb2_grpc.ChatServiceServicer):
    """What every group of chat RPCs shares: the services it calls, look-ups that check visibility, and checks of
    request fields."""

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
        embedder: Embedding | None = None,
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
        self.scratch: scratch.Scratch | None = None
        if embedder is not None and documents is not None and settings.chat_scratch_max_chars:  # 0: documents are cut
            self.scratch = scratch.Scratch(db, embedder, documents, settings)
        self.turns.scratch = self.scratch
        if agents is not None:
            self.turns.agent_resume = self._resume_agent_turn
        self._detached: set[asyncio.Task] = set()

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
        return self._visible_session(row, session_id, allow_deleted=allow_deleted)

    def _visible_session(
        self, row: ChatSessionRow | None, session_id: str, *, allow_deleted: bool = False
    ) -> ChatSessionRow:
        """`row` (read as session `session_id`) when the caller may use it; else the RPC error."""
        if not session_id:
            raise invalid_argument("session_id", "required")
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
        """The model (default: the chat default). `cached`: the registry snapshot's copy will do (turn starts; the
        LLM service itself refuses an offline model when called)."""
        if self.llm is None:
            raise llm_unavailable()
        if not model_id:
            model_id = await self.llm.default_model_id("chat")
            if not model_id:
                raise TypecaseError(
                    grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", "no model given and no default chat model is set"
                )
        return await (self.llm.current_model(model_id) if cached else self.llm.get_model(model_id))

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
        assert self.agents is not None  # the hook is set only with agents
        await agent_resume(self.agents, parent.assistant_id if parent else "", turn, events)
