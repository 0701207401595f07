"""Monotonic ULIDs: messages are ordered by id, so ids made for one session must sort in creation order even
within one millisecond (a question and its answer), and after the session's newest id even if this replica's
clock is behind the one that wrote it."""

from __future__ import annotations

import secrets
import threading
import time

from ulid import ULID

_RANDOM_BITS = 80
_lock = threading.Lock()
_last = (0, 0)  # (milliseconds, random part) of the last id made by this process


def _parts(ulid: str) -> tuple[int, int]:
    raw = bytes(ULID.from_str(ulid))
    return int.from_bytes(raw[:6], "big"), int.from_bytes(raw[6:], "big")


def monotonic_ids(count: int, after: str | None = None) -> list[str]:
    """`count` new ids, increasing, each greater than every id this process made before and than `after`."""
    global _last
    floor = _parts(after) if after else (0, 0)
    out = []
    with _lock:
        last = max(_last, floor)
        for _ in range(count):
            now = time.time_ns() // 1_000_000
            if now > last[0]:
                # Leave the top random bit clear so increments within this millisecond cannot overflow.
                last = (now, secrets.randbits(_RANDOM_BITS - 1))
            else:
                ms, rand = last
                last = (ms + 1, secrets.randbits(_RANDOM_BITS - 1)) if rand + 1 >= 1 << _RANDOM_BITS else (ms, rand + 1)
            out.append(str(ULID.from_bytes(last[0].to_bytes(6, "big") + last[1].to_bytes(10, "big"))))
        _last = last
    return out


def monotonic_id(after: str | None = None) -> str:
    return monotonic_ids(1, after)[0]
