"""What of the host's file system the sandbox sees: the Python runtime and nothing else.

That is the base interpreter (never the venv: its site-packages hold the server's code and dependencies), the
directories on its isolated `sys.path` (the standard library and lib-dynload), with any site-packages or
dist-packages inside them hidden under an empty tmpfs, and the directories of the shared libraries the
interpreter and its extension modules load (found with ldd; libc, libffi for ctypes, libssl, ...), plus
/etc/ld.so.cache. Everything is bound read-only at its host path, so the interpreter finds its prefix and its
libraries exactly as it does outside; the host's symlinks on the way (/lib -> usr/lib on merged-/usr systems) are
recreated as symlinks. Directories that bubblewrap has to create on the way to a mount point get mode 0755, since
it would otherwise copy a private mode such as /root's 0700 and the unprivileged sandbox user could not pass.

Working this out costs 0.4-0.9 s here (one ldd over ~70 modules), so it is done once per process and interpreter.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HIDDEN_INSIDE_STDLIB = ("site-packages", "dist-packages")
LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


class RuntimeUnavailable(Exception):
    pass


@dataclass
class Runtime:
    interpreter: str
    binds: list[str] = field(default_factory=list)  # real host directories or files, bound read-only at themselves
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # (target, link path)
    hidden: list[str] = field(default_factory=list)  # directories covered with an empty tmpfs

    def bwrap_args(self) -> list[str]:
        args: list[str] = []
        made: set[str] = {"/"}

        def make_parents(path: str) -> None:
            for parent in reversed(Path(path).parents):
                name = str(parent)
                if name not in made and not self._covered(name):
                    args.extend(["--perms", "0755", "--dir", name])
                    made.add(name)

        for path in self.binds:
            make_parents(path)
            args.extend(["--ro-bind", path, path])
        for target, link in self.symlinks:
            make_parents(link)
            args.extend(["--symlink", target, link])
        for path in self.hidden:
            args.extend(["--tmpfs", path])
        return args

    def _covered(self, path: str) -> bool:
        return any(path == bound or path.startswith(bound.rstrip("/") + "/") for bound in self.binds)


def base_interpreter() -> str:
    """The interpreter behind the server's venv (sys._base_executable), resolved."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.cache
def discover(interpreter: str) -> Runtime:
    """The runtime of `interpreter` as the sandbox needs it (raises RuntimeUnavailable with the reason)."""
    try:
        probe = subprocess.run(
            [interpreter, "-I", "-S", "-c", "import json, sys; print(json.dumps(sys.path))"],
            capture_output=True,
            text=True,
            timeout=30,
            env={},
            check=True,
        )
        search_path = [p for p in json.loads(probe.stdout) if os.path.isdir(p)]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise RuntimeUnavailable(f"cannot run the Python interpreter {interpreter}: {exc}") from exc
    modules = [str(p) for d in search_path for p in sorted(Path(d).glob("*.so"))]
    try:
        ldd = subprocess.run(["ldd", interpreter, *modules], capture_output=True, text=True, timeout=60, env={})
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeUnavailable(f"cannot list the interpreter's shared libraries with ldd: {exc}") from exc
    libraries = sorted({m.group(1) for m in LDD_PATH.finditer(ldd.stdout)})
    if not libraries:
        raise RuntimeUnavailable(f"ldd found no shared library of {interpreter}: {ldd.stderr.strip()[:200]}")

    runtime = Runtime(interpreter)
    wanted_dirs = {os.path.realpath(d) for d in search_path}
    wanted_dirs |= {os.path.dirname(os.path.realpath(lib)) for lib in libraries}
    binds = {interpreter} | wanted_dirs
    if os.path.isfile("/etc/ld.so.cache"):
        binds.add(os.path.realpath("/etc/ld.so.cache"))
    # A directory inside another bound one needs no bind of its own.
    runtime.binds = sorted(p for p in binds if not any(p.startswith(o.rstrip("/") + "/") for o in binds if o != p))
    for path in [*libraries, *search_path]:
        for target, link in symlinks_on_the_way(path):
            if (target, link) not in runtime.symlinks and not runtime._covered(link):
                runtime.symlinks.append((target, link))
    runtime.hidden = [
        os.path.join(d, name)
        for d in sorted(wanted_dirs)
        for name in HIDDEN_INSIDE_STDLIB
        if os.path.isdir(os.path.join(d, name))
    ]
    return runtime


def symlinks_on_the_way(path: str) -> list[tuple[str, str]]:
    """(target, link) for every symlink met while resolving `path` component by component."""
    found: list[tuple[str, str]] = []
    current, pending = "/", list(Path(path).parts[1:])
    for _ in range(256):  # a bound on symlink loops
        if not pending:
            break
        name = pending.pop(0)
        if name == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            found.append((target, candidate))
            pending = list(Path(target).parts[1:] if target.startswith("/") else Path(target).parts) + pending
            current = "/" if target.startswith("/") else current
        else:
            current = candidate
    return found
