"""Timestamps set from integers (rpc/convert.py) equal protobuf's own FromDatetime / GetCurrentTime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2

from typecase.server.rpc.convert import set_now, to_timestamp


def test_to_timestamp_matches_from_datetime_for_naive_aware_and_pre_epoch_values():
    values = [
        datetime(2026, 12, 7, 8, 1, 2, 345678),  # naive: UTC
        datetime(2026, 12, 7, 8, 1, 2, 345678, tzinfo=UTC),
        datetime(2026, 12, 7, 9, 1, 2, 999999, tzinfo=timezone(timedelta(hours=1))),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # negative seconds, positive nanos
        datetime(1970, 1, 1, tzinfo=UTC),
    ]
    for value in values:
        expected = timestamp_pb2.Timestamp()
        expected.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
        assert to_timestamp(value) == expected, value
    assert to_timestamp(None) is None


def test_set_now_is_the_current_time():
    before = timestamp_pb2.Timestamp()
    before.GetCurrentTime()
    stamp = timestamp_pb2.Timestamp()
    set_now(stamp)
    after = timestamp_pb2.Timestamp()
    after.GetCurrentTime()
    # GetCurrentTime keeps microseconds: `after` may be up to 1 us behind a nanosecond reading taken before it
    assert before.ToNanoseconds() <= stamp.ToNanoseconds() <= after.ToNanoseconds() + 1000
    assert 0 <= stamp.nanos < 1_000_000_000
