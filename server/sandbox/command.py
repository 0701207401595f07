"""The bubblewrap command line of one sandbox.

- New PID, network, IPC, UTS and cgroup namespaces, plus a user namespace when the server is not root (bubblewrap
  then maps the server's uid to the sandbox's). No network: the new network namespace has only its own loopback,
  so the server's listeners on 127.0.0.1, and the rest of the world, are out of reach.
- The file system is a fresh tmpfs, made read-only, holding the Python runtime (runtime.py) read-only, a new
  /proc of the sandbox's own PID namespace, a minimal /dev, and a private /tmp of a fixed size. Nothing else of the
  host exists there: no data dir, no project, no venv, no /etc, no sockets.
- An empty environment, for bubblewrap as well (its PID 1 in the sandbox would otherwise carry the server's
  environment), a new session (no TIOCSTI into a terminal), --die-with-parent.
- As root, bubblewrap keeps only CAP_SETUID and CAP_SETGID, which the program inside (inside.py) uses at once to
  become `uid`/`gid`: then RLIMIT_NPROC binds (the kernel exempts root from it) and a process that got out
  somehow would be nobody on the host. bubblewrap cannot start as that uid instead: as an unprivileged user it
  resolves the paths to bind with that user's rights, and a runtime under /root (pyenv) is not reachable so.
- The seccomp filter (seccomp.py) is read from an fd and applied just before the interpreter starts.
"""

from __future__ import annotations

import os

from typecase.server.sandbox.runtime import Runtime

NAMESPACES = ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
HOME = "/tmp"


def bwrap_argv(
    bwrap: str, runtime: Runtime, program: str, *, seccomp_fd: int, tmp_bytes: int, uid: int, gid: int
) -> list[str]:
    argv = [
        bwrap,
        *NAMESPACES,
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--clearenv",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "HOME",
        HOME,
    ]
    if os.geteuid() == 0:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]
    argv += runtime.bwrap_args()
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        HOME,
        "--remount-ro",
        "/",
        "--chdir",
        HOME,
        "--seccomp",
        str(seccomp_fd),
        runtime.interpreter,
        "-I",
        "-S",
        "-B",
        "-c",
        program,
    ]
    return argv


def unsandboxed_argv(interpreter: str, program: str) -> list[str]:
    """The UNSAFE fallback (sandbox_unsafe_allow_unsandboxed): the same program as a plain child process."""
    return [interpreter, "-I", "-S", "-B", "-c", program]
