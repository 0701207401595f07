"""Targets for tests/infra/test_bounded.py, run inside the worker processes: each does what the request says."""

from __future__ import annotations

import os
import time
from typing import Any


def run(request: dict[str, Any]) -> Any:
    what = request["do"]
    if what == "echo":
        return {"value": request["value"], "pid": os.getpid()}
    if what == "fail":
        raise ValueError("the target refused")
    if what == "spin":  # pure Python, never returns on its own
        while True:
            pass
    if what == "sleep_in_c":  # one C call: no Python-level check could interrupt it
        time.sleep(request["seconds"])
        return "slept"
    if what == "allocate":
        return len(bytearray(request["bytes"]))
    if what == "environment":
        return sorted(os.environ)
    if what == "text":
        return "x" * request["chars"]
    raise AssertionError(what)
