"""Small conversions between SQL values and protobuf well-known types."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp, present: bool = True) -> datetime | None:
    """A Timestamp field as an aware datetime; None when the field is unset (`present` = message.HasField)."""
    if not present:
        return None
    return stamp.ToDatetime(tzinfo=UTC)
