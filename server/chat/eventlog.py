"""A turn's event log: the shared resumable event log (typecase.server.infra.eventlog) keyed by turn.

Entries carry a serialized ChatResponse; ChatResponse and StreamTurnEventsResponse share one wire layout, so the
payload is sent by either RPC as is.
"""

from __future__ import annotations

from typecase.server.infra.cache import Cache
from typecase.server.infra.eventlog import Entry, LiveLog
from typecase.server.infra.eventlog import EventLog as _EventLog

__all__ = ["Entry", "EventLog", "LiveLog", "stream_key"]


def stream_key(turn_id: str) -> str:
    return f"chat:turn:{turn_id}:events"


class EventLog(_EventLog):
    def __init__(self, cache: Cache, ttl_seconds: float, running_ttl_seconds: float):
        super().__init__(cache, ttl_seconds, running_ttl_seconds, key=stream_key)
