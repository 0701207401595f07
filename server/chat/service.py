"""ChatService: sessions, messages and feedback in SQL; chat turns run by turns.py and read from their event log.

The servicer is assembled from one group of RPCs per module (sessions, messages, attachments, turns) over a shared
base (rpc_base.py: dependencies, visibility-checked look-ups, field checks), so that each module has one concern.
"""

from __future__ import annotations

from typecase.server.chat.message_rpcs import MESSAGE_FIELDS, RATINGS, MessageRpcs
from typecase.server.chat.rpc_base import (
    ChatBase,
    llm_unavailable,
    permission_denied,
    session_deleted,
    turn_in_progress,
)
from typecase.server.chat.session_rpcs import SESSION_FIELDS, SessionRpcs
from typecase.server.chat.turn_rpcs import MAX_REQUEST_ID, TurnRpcs

__all__ = [
    "MAX_REQUEST_ID",
    "MESSAGE_FIELDS",
    "RATINGS",
    "SESSION_FIELDS",
    "ChatBase",
    "ChatService",
    "llm_unavailable",
    "permission_denied",
    "session_deleted",
    "turn_in_progress",
]


class ChatService(SessionRpcs, MessageRpcs, TurnRpcs):
    """The chat.v1 ChatService: every RPC, from the groups above."""
