"""SQL tables of the chat domain: sessions, their messages, and turns (one question and its generated answer).

No foreign keys to other domains' tables (users, models, flows): each domain's migrations branch off the
foundation independently, and other domains are reached through their services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from typecase.server.infra.sql import Base, JSONType, id_column, utcnow

# Answers can be long: MySQL's TEXT stops at 64 KiB, MEDIUMTEXT at 16 MiB. Other backends' TEXT is unbounded.
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

# Turn and message statuses as stored (the proto enums without their prefixes, lower case).
RUNNING, COMPLETE, STOPPED, FAILED, STREAMING = "running", "complete", "stopped", "failed", "streaming"


class ChatSessionRow(Base):
    __tablename__ = "chat_sessions"
    __table_args__ = (
        Index("ix_chat_sessions_owner_update", "owner_id", "update_time"),
        Index("ix_chat_sessions_flow_id", "flow_id"),
        Index("ix_chat_sessions_model_id", "model_id"),
    )

    id: Mapped[str] = id_column()
    owner_id: Mapped[str] = mapped_column(String(26))
    title: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(8), default="model")  # model | flow | agent (an assistant)
    model_id: Mapped[str] = mapped_column(String(26), default="")
    flow_id: Mapped[str] = mapped_column(String(26), default="")
    flow_version_id: Mapped[str] = mapped_column(String(26), default="")
    assistant_id: Mapped[str] = mapped_column(String(26), default="")
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=dict)  # an assistant template values
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    kb_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    app_name: Mapped[str] = mapped_column(String(255), default="")
    latest_message_preview: Mapped[str] = mapped_column(String(255), default="")
    latest_message_time: Mapped[datetime | None]
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    like_count: Mapped[int] = mapped_column(Integer, default=0)
    dislike_count: Mapped[int] = mapped_column(Integer, default=0)
    copied_count: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    retrieval: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # RetrievalSettings JSON; None: defaults
    # The turn in progress, if any: set and cleared with compare-and-set updates (one turn per session).
    active_turn_id: Mapped[str | None] = mapped_column(String(26))
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)
    delete_time: Mapped[datetime | None]


class ChatMessageRow(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (Index("ix_chat_messages_session_id_id", "session_id", "id"),)

    id: Mapped[str] = id_column()
    session_id: Mapped[str] = mapped_column(String(26))
    turn_id: Mapped[str] = mapped_column(String(26), default="", index=True)
    role: Mapped[str] = mapped_column(String(16))  # user | assistant | system
    category: Mapped[str] = mapped_column(String(16))  # question | answer | guide | input_request | notice
    content: Mapped[str] = mapped_column(LongText, default="")
    citations: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    attachments: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    steps: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    input_required: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=COMPLETE)  # complete | streaming | stopped | failed
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # google.rpc.Status as proto JSON
    finish_reason: Mapped[str] = mapped_column(String(16), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    model_id: Mapped[str] = mapped_column(String(26), default="")
    rating: Mapped[str] = mapped_column(String(8), default="")  # "" | like | dislike
    feedback_comment: Mapped[str] = mapped_column(Text, default="")
    copied_count: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)


class ChatTurnRow(Base):
    """A question and the generation of its answer. While `running`, the replica executing it renews
    `lease_expire_time`; a running turn whose lease lapsed belongs to a dead replica and is continued (from
    `request` and the text logged so far) or failed by whoever notices (see turns.py)."""

    __tablename__ = "chat_turns"
    __table_args__ = (
        UniqueConstraint("session_id", "request_id", name="uq_chat_turns_session_id_request_id"),
        Index("ix_chat_turns_status_lease", "status", "lease_expire_time"),
    )

    id: Mapped[str] = id_column()
    session_id: Mapped[str] = mapped_column(String(26), index=True)
    owner_id: Mapped[str] = mapped_column(String(26))
    request_id: Mapped[str | None] = mapped_column(String(128))
    question_message_id: Mapped[str] = mapped_column(String(26))
    answer_message_id: Mapped[str] = mapped_column(String(26))
    model_id: Mapped[str] = mapped_column(String(26), default="")
    run_id: Mapped[str] = mapped_column(String(26), default="")  # flow sessions: the run that answered
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)  # running | complete | stopped | failed
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # ContextBudget as proto JSON
    replica: Mapped[str] = mapped_column(String(128), default="")
    lease_expire_time: Mapped[datetime | None]
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # GenerateRequest (proto JSON) while running
    takeovers: Mapped[int] = mapped_column(Integer, default=0)  # times another replica continued it
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    end_time: Mapped[datetime | None]


class ChatScratchChunkRow(Base):
    """A chunk of a document attached in chat that was too large for the prompt (chat/scratch.py): its text and
    its vector (float32 bytes of the embedding model `model_id`), searched exactly per question of the session.
    `message_id` is the question that brought it ("" until that message exists); rows go with the session or the
    message."""

    __tablename__ = "chat_scratch_chunks"

    id: Mapped[str] = id_column()
    session_id: Mapped[str] = mapped_column(String(26), index=True)
    message_id: Mapped[str] = mapped_column(String(26), default="", index=True)
    name: Mapped[str] = mapped_column(String(255))  # the attachment's file name, cited
    seq: Mapped[int] = mapped_column(Integer)  # the chunk's place in its document
    text: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(String(26))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
