"""Subprocess servers on loopback for the tools tests: started on a free port, stopped by their pid."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from tests.conftest import ROOT, free_port


def start(module: str, *args: str) -> tuple[subprocess.Popen, int]:
    """Run `python -m module *args` ("{port}" in args is replaced by a free port) until the port accepts."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, *(a.replace("{port}", str(port)) for a in args)], cwd=ROOT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if proc.poll() is not None:
            raise AssertionError(f"{module} exited")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{module} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
