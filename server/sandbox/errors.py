"""What running code in the sandbox can fail with. Callers (the flow code node, tools) turn these into their own
errors; `message` is written for the person who wrote the code."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: the code did not produce a result."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SandboxUnavailable(SandboxError):
    """There is no working sandbox on this server, so no code runs (fail closed). The message names what to
    install or change."""


class CodeFailed(SandboxError):
    """The code ran and failed: it raised, returned something other than a dict, or printed no result."""


class LimitExceeded(SandboxError):
    """The code hit one of its limits and was stopped. `limit` is one of LIMITS."""

    LIMITS = ("time", "cpu", "memory", "file_size", "tmp_space", "threads", "output")

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit
