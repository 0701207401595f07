"""The program that runs inside the sandbox as `python -I -S -c <this file's text>`: the request as JSON on stdin,
the answer as one JSON document on stdout. Standard library only: nothing of Typecase or of the venv is visible
there.

Order matters. As root (the server runs as root, bubblewrap kept only CAP_SETUID and CAP_SETGID) it first becomes
the unprivileged sandbox uid/gid, which also clears those capabilities; it refuses to go on as root unless the
server said so (the explicitly unsafe unsandboxed mode). Then it sets the resource limits, which it can no longer
raise, and only then compiles and runs the user's code. The seccomp filter was applied by bubblewrap before this
program started.

Answer: {"ok": true, "outputs": <main()'s dict>, "stdout": <the end of what it printed>} or
{"ok": false, "error": "<Type>: <message>", "limit": <"memory" | "file_size" | "tmp_space" | "threads" | "cpu" |
null>}. The server reads stdout up to the output limit, so printing is captured (its end is kept, a quarter of the
output limit) rather than written to the real stdout.
"""

import errno
import io
import json
import os
import resource
import signal
import sys


class CpuLimit(BaseException):
    """Raised by the SIGXCPU handler: the soft CPU limit was reached (the hard one, a second later, kills)."""


def drop_privileges(ids):
    if ids is not None and os.getuid() == 0:
        uid, gid = ids
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # from root to non-root: the permitted capabilities are cleared
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SystemExit("could not leave root")


def apply_limits(limits):
    cpu = limits["cpu_seconds"]
    for which, soft, hard in (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"], limits["file_bytes"]),
        (resource.RLIMIT_NPROC, limits["threads"], limits["threads"]),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(which, (soft, hard))  # lowering always works; a failure ends the run here


def stop_on_cpu_limit(signum, frame):
    raise CpuLimit()


def failure(exc):
    limit = None
    if isinstance(exc, MemoryError):
        limit = "memory"
    elif isinstance(exc, CpuLimit):
        limit = "cpu"
    elif isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        limit = "file_size"
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        limit = "tmp_space"
    elif isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        limit = "threads"
    message = type(exc).__name__ + ": " + str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EPERM:
        message += " (the sandbox refuses new processes and system calls code has no use for)"
    return {"ok": False, "error": message[:2000], "limit": limit}


def run(request):
    namespace = {"__name__": "__sandbox__", "inputs": request["inputs"]}
    exec(compile(request["code"], "<code>", "exec"), namespace)
    entry = request.get("entry")
    if not entry:
        return {}
    main = namespace.get(entry)
    if not callable(main):
        raise TypeError(f"the code must define {entry}(**inputs)")
    result = main(**request["inputs"])
    if not isinstance(result, dict):
        raise TypeError(f"{entry}() must return a dict, not {type(result).__name__}")
    return result


def main():
    request = json.loads(sys.stdin.buffer.read())
    drop_privileges(request.get("drop"))
    if os.getuid() == 0 and not request.get("allow_root"):
        raise SystemExit("refusing to run code as root")
    apply_limits(request["limits"])
    signal.signal(signal.SIGXCPU, stop_on_cpu_limit)
    out, printed = sys.stdout, io.StringIO()
    sys.stdout = printed
    try:
        outputs = run(request)
        tail = request["limits"]["output_bytes"] // 4
        answer = json.dumps({"ok": True, "outputs": outputs, "stdout": printed.getvalue()[-tail:]}, default=str)
    except BaseException as exc:  # the code's own failure, reported as data; SystemExit included
        answer = json.dumps(failure(exc))
    out.write(answer)
    out.flush()


if __name__ == "__main__":
    main()
