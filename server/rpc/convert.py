"""Small conversions between SQL values and protobuf well-known types.

Timestamps are set from integers here rather than with Timestamp.GetCurrentTime / FromDatetime: those go through
datetime.utctimetuple and calendar.timegm in Python, and every streamed chat event carries a timestamp (they were
a twentieth of a chat turn's server CPU)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000


def set_now(stamp: timestamp_pb2.Timestamp) -> None:
    """Set `stamp` to the current time (as GetCurrentTime does, to the nanosecond)."""
    stamp.seconds, stamp.nanos = divmod(time.time_ns(), _NS)


def set_datetime(stamp: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Set `stamp` to `value` (naive: UTC), to the microsecond, as FromDatetime does."""
    delta = (value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH
    stamp.seconds = delta.days * 86400 + delta.seconds
    stamp.nanos = delta.microseconds * 1000


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    set_datetime(stamp, value)
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp, present: bool = True) -> datetime | None:
    """A Timestamp field as an aware datetime; None when the field is unset (`present` = message.HasField)."""
    if not present:
        return None
    return stamp.ToDatetime(tzinfo=UTC)
