"""The sandbox for untrusted code: one runner shared by flow code nodes and any tool that runs code.

    sandbox = Sandbox(SandboxConfig(...)); await sandbox.start()   # once: the self-check, verdict kept
    result = await sandbox.run_python(code, inputs, Limits(...))   # Result(outputs, stdout), or a typed error

sandbox.py (the API), command.py (the bubblewrap command line), runtime.py (what of the host is visible),
seccomp.py (the syscall filter), process.py (running and killing one process), inside.py (the program inside).
"""

from typecase.server.sandbox.errors import CodeFailed, LimitExceeded, SandboxError, SandboxUnavailable
from typecase.server.sandbox.sandbox import Limits, Result, Sandbox, SandboxConfig

__all__ = [
    "CodeFailed",
    "LimitExceeded",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxUnavailable",
]
