"""Issue 18: a code node was a way from an ordinary user to the admin. The attack, step by step, by a new ordinary
user of a real `typecase serve` (admin key in its environment, the LLM proxy on, everything in its data dir),
through the public REST API: each step must be refused or see nothing of the host. Then the limits (each stops the
code with a clear node error), the fail-closed start (no bubblewrap: code nodes refused, naming it), and the
sandbox's Python API that tools will use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, ROOT, ServerProcess, free_port

PASSWORD = "correct horse battery"
MAX_OUTPUT_BYTES = 64 * 1024
SERVER_ENV = {
    "TYPECASE_PROXY_ENABLED": "true",
    "TYPECASE_FLOW_CODE_CPU_SECONDS": "1",
    "TYPECASE_FLOW_CODE_MEMORY_MB": "128",
    "TYPECASE_FLOW_CODE_TIMEOUT_SECONDS": "30",  # CPU-limit cases must end by CPU time even on a loaded machine
    "TYPECASE_FLOW_CODE_MAX_OUTPUT_BYTES": str(MAX_OUTPUT_BYTES),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("code-sandbox") / "data"
    data_dir.mkdir()
    proxy_port = free_port()
    process = ServerProcess(data_dir, {**SERVER_ENV, "TYPECASE_PROXY_PORT": str(proxy_port)}, "server")
    process.proxy_port = proxy_port
    process.data_dir = data_dir
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
async def mallory(server):
    """A new ordinary user's HTTP client (created with the admin key, then logged in with a password)."""
    name = f"mallory-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
        created = await http.post(
            "/v1/users",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={"username": name, "password": PASSWORD, "role": "USER_ROLE_USER"},
        )
        assert created.status_code == 200, created.text
        login = await http.post("/v1/auth:login", json={"username": name, "password": PASSWORD})
        assert login.status_code == 200, login.text
        http.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        yield http


async def create_code_flow(http: httpx.AsyncClient, code: str, **params: Any) -> str:
    """start -> code -> end, owned by the caller; the end node outputs the code's `seen`."""
    graph = {
        "nodes": [
            {"id": "start", "type": "NODE_TYPE_START"},
            {"id": "c", "type": "NODE_TYPE_CODE", "params": {"code": code, **params}},
            {"id": "end", "type": "NODE_TYPE_END", "params": {"outputs": {"seen": "{{c.seen}}"}}},
        ],
        "edges": [{"id": "e1", "source": "start", "target": "c"}, {"id": "e2", "source": "c", "target": "end"}],
    }
    created = await http.post("/v1/flows", json={"name": f"probe {uuid.uuid4().hex[:6]}", "graph": graph})
    assert created.status_code == 200, created.text
    return created.json()["flow"]["id"]


async def run_code(http: httpx.AsyncClient, code: str, **params: Any) -> tuple[Any, dict | None]:
    """Run the code in a new flow as the caller: (the code's `seen` output, None) or (None, the run_failed status
    as JSON)."""
    flow_id = await create_code_flow(http, code, **params)
    run = await http.post(f"/v1/flows/{flow_id}:run", json={"inputs": {}})
    assert run.status_code == 200, run.text
    last = json.loads(run.text.strip().splitlines()[-1])["result"]["event"]
    if "run_failed" in last:
        return None, last["run_failed"]
    return last["run_finished"]["outputs"]["seen"], None


def error_info(status: dict) -> dict:
    return next(d for d in status.get("details", ()) if d.get("@type", "").endswith("ErrorInfo"))


def code_with(template: str, **constants: Any) -> str:
    """The attack's code with the host facts an attacker would guess (paths, ports) written in."""
    for name, value in constants.items():
        template = template.replace(name, repr(value))
    return template


# -- the attack ------------------------------------------------------------------------------------------------

READ_ENVIRON = """
import os
def main():
    found = {k: v for k, v in os.environ.items() if k.startswith("TYPECASE_")}
    readable = []
    for pid in sorted({str(os.getppid()), "1", "self"} | {p for p in os.listdir("/proc") if p.isdigit()}):
        try:
            environ = open("/proc/%s/environ" % pid, "rb").read().decode(errors="replace")
        except OSError:
            continue
        readable.append(pid)
        for entry in environ.split("\\0"):
            if entry.startswith("TYPECASE_"):
                found[entry.partition("=")[0]] = entry.partition("=")[2]
    return {"seen": {"found": found, "readable": readable, "environment": sorted(os.environ)}}
"""


async def test_a_code_node_cannot_read_the_servers_environment(server, mallory):
    host_environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes()
    assert ADMIN_KEY.encode() in host_environ  # what there is to steal
    seen, failed = await run_code(mallory, READ_ENVIRON)
    assert failed is None, failed
    assert seen["found"] == {}, seen
    assert set(seen["environment"]) <= {"LANG", "HOME", "PWD"}, seen


READ_FILES = """
import os, sqlite3
def main():
    seen = {}
    for path in TARGETS:
        try:
            seen[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path, "rb").read(64).hex()
        except OSError as exc:
            seen[path] = type(exc).__name__
    try:
        db = sqlite3.connect("file:%s?mode=ro" % DATABASE, uri=True)
        seen["sql"] = db.execute("select name from sqlite_master").fetchall()
    except Exception as exc:
        seen["sql"] = type(exc).__name__
    return {"seen": seen}
"""


async def test_a_code_node_sees_nothing_of_the_data_dir_the_project_or_the_venv(server, mallory):
    data = server.data_dir.resolve()
    secrets = [data / "typecase.db", data / "llm-secret.key"]
    assert all(path.is_file() for path in secrets), sorted(os.listdir(data))  # what there is to steal
    venv_packages = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    targets = [
        str(data),
        *map(str, secrets),
        str(ROOT),
        str(ROOT / "server" / "config.py"),
        sys.prefix,
        str(venv_packages),
        "/etc/shadow",
        "/etc/passwd",
        "/home",
        "/root/.ssh",
    ]
    seen, failed = await run_code(mallory, code_with(READ_FILES, TARGETS=targets, DATABASE=str(secrets[0])))
    assert failed is None, failed
    for path in targets:
        assert seen[path] == "FileNotFoundError" or seen[path] == [], (path, seen[path])
    assert seen["sql"] == "OperationalError", seen["sql"]


CONNECT = """
import socket
def main():
    seen = {}
    for port in PORTS:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
            seen[str(port)] = "connected"
        except OSError as exc:
            seen[str(port)] = type(exc).__name__
    return {"seen": seen}
"""


async def test_a_code_node_cannot_reach_the_servers_listeners(server, mallory):
    ports = [server.grpc_port, server.http_port, server.proxy_port]
    for port in ports:  # they are there for everyone else on this host
        with __import__("socket").create_connection(("127.0.0.1", port), timeout=3):
            pass
    seen, failed = await run_code(mallory, code_with(CONNECT, PORTS=[*ports, 5432, 6379, 3306]))
    assert failed is None, failed
    assert "connected" not in seen.values(), seen


ESCAPE = """
import ctypes, os, sys, time
SYS_FORK = {"x86_64": 57}.get(os.uname().machine)
def child(libc):
    libc.setsid()
    exe = sys.executable.encode()
    argv = (ctypes.c_char_p * 4)(exe, b"-c", ("import time; time.sleep(120)  # " + MARKER).encode(), None)
    libc.execve(exe, argv, (ctypes.c_char_p * 1)(None))
    libc._exit(0)
def main():
    libc = ctypes.CDLL(None, use_errno=True)
    seen = {}
    for how in ("fork", "syscall"):
        if how == "syscall" and SYS_FORK is None:
            continue
        pid = libc.fork() if how == "fork" else libc.syscall(SYS_FORK)
        if pid == 0:
            child(libc)
        seen[how] = pid if pid > 0 else -ctypes.get_errno()
    time.sleep(LINGER)
    return {"seen": seen}
"""


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("ending", ["returns", "is killed"])
async def test_a_forked_setsid_execve_child_does_not_outlive_its_code_node(server, mallory, ending):
    marker = f"typecase-escape-{uuid.uuid4().hex}"
    linger, params = (0, {}) if ending == "returns" else (60, {"timeout_ms": 2000})
    try:
        seen, failed = await run_code(mallory, code_with(ESCAPE, MARKER=marker, LINGER=linger), **params)
        for _ in range(30):  # tearing a sandbox down is not instantaneous
            if not processes_with(marker):
                break
            await asyncio.sleep(0.1)
        assert processes_with(marker) == [], "a process started by the code outlived it"
        if ending == "returns":
            assert failed is None, failed
            assert all(result < 0 for result in seen.values()), f"a process was started: {seen}"
        else:
            assert failed is not None and error_info(failed)["metadata"]["limit"] == "time", failed
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


# -- what still works --------------------------------------------------------------------------------------------


async def test_a_normal_code_node_gets_its_inputs_and_returns_outputs(server, mallory):
    code = (
        "import json, math\ndef main(n, names):\n    print('noise on stdout')\n"
        "    return {'seen': {'root': math.isqrt(int(n)), 'names': sorted(names), 'text': json.dumps(names)}}"
    )
    seen, failed = await run_code(mallory, code, inputs={"n": 49, "names": ["b", "a"]})
    assert failed is None, failed
    assert seen == {"root": 7, "names": ["a", "b"], "text": '["b", "a"]'}


# -- limits ------------------------------------------------------------------------------------------------------

LIMITS = {
    "memory bomb": (
        "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(1 << 20))",
        {},
        "memory",
        "more memory than allowed (128 MiB)",
    ),
    "fork bomb": ("import os\ndef main():\n    while True:\n        os.fork()", {}, None, "Operation not permitted"),
    "busy loop": ("def main():\n    while True:\n        pass", {}, "cpu", "more CPU time than allowed (1s)"),
    "sleep": ("import time\ndef main():\n    time.sleep(60)", {"timeout_ms": 500}, "time", "longer than 0.5s"),
    "huge file": (
        "def main():\n    with open('/tmp/big', 'wb') as f:\n        while True:\n            f.write(bytes(1 << 16))",
        {},
        "file_size",
        "file larger than allowed",
    ),
    "thread bomb": (
        "import threading, time\ndef main():\n    while True:\n"
        "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()",
        {},
        "threads",
        "more threads than allowed",
    ),
    "flood of output": (
        "import os\ndef main():\n    while True:\n        os.write(1, bytes(1 << 16))",
        {},
        "output",
        f"larger than {MAX_OUTPUT_BYTES} bytes",
    ),
}


@pytest.mark.parametrize("case", LIMITS)
async def test_a_runaway_code_node_is_stopped_with_a_clear_error(server, mallory, case):
    code, params, limit, message = LIMITS[case]
    began = time.monotonic()
    seen, failed = await run_code(mallory, code, **params)
    assert failed is not None, seen
    info = error_info(failed)
    assert failed["code"] == 9 and info["reason"] == "NODE_FAILED", failed  # FAILED_PRECONDITION
    assert message in failed["message"], failed["message"]
    assert info["metadata"].get("limit") == limit, info
    assert time.monotonic() - began < 30
    assert httpx.get(server.http_url + "/readyz").status_code == 200


WRITE = "def main():\n    with open('/tmp/f', 'wb') as f:\n        f.write(bytes(SIZE))\n    return {'seen': 'ok'}"


@pytest.mark.parametrize("size, limit", [(MAX_OUTPUT_BYTES, None), (MAX_OUTPUT_BYTES + 1, "file_size")])
async def test_a_file_may_be_exactly_as_large_as_the_limit(server, mallory, size, limit):
    seen, failed = await run_code(mallory, code_with(WRITE, SIZE=size))
    assert (error_info(failed)["metadata"]["limit"] if failed else None) == limit, (seen, failed)


# -- fail closed -------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def new_user_of(app):
    """A new ordinary user's HTTP client for an in-process App."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=60) as http:
        name = f"user-{uuid.uuid4().hex[:8]}"
        created = await http.post(
            "/v1/users",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={"username": name, "password": PASSWORD, "role": "USER_ROLE_USER"},
        )
        assert created.status_code == 200, created.text
        login = await http.post("/v1/auth:login", json={"username": name, "password": PASSWORD})
        http.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        yield http


async def test_without_bubblewrap_code_nodes_are_refused_naming_it(app_factory, tmp_path):
    app = await app_factory(sandbox_bwrap_path=str(tmp_path / "no-such-bwrap"))
    async with new_user_of(app) as http:
        seen, failed = await run_code(http, "def main():\n    return {'seen': 'ran anyway'}")
        assert failed is not None, seen
        assert failed["code"] == 9 and error_info(failed)["reason"] == "NODE_FAILED", failed
        assert "bubblewrap" in failed["message"] and "apt install bubblewrap" in failed["message"], failed
        flow_id = await create_code_flow(http, "def main():\n    return {}")
        checked = await http.post(f"/v1/flows/{flow_id}:validate", json={})
        warning = [p for p in checked.json()["problems"] if p["code"] == "CODE_UNAVAILABLE"]
        assert warning and "bubblewrap" in warning[0]["message"] and warning[0]["node_id"] == "c", checked.json()
        ready = (await http.get("/readyz")).json()
        assert ready["code_sandbox"]["available"] is False and "bubblewrap" in ready["code_sandbox"]["detail"]


async def test_only_the_loudly_named_unsafe_setting_runs_code_without_a_sandbox(app_factory, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="typecase.sandbox")
    app = await app_factory(sandbox_bwrap_path=str(tmp_path / "no-such-bwrap"), sandbox_unsafe_allow_unsandboxed=True)
    assert any("WITHOUT A SANDBOX" in r.getMessage() for r in caplog.records)
    async with new_user_of(app) as http:
        seen, failed = await run_code(http, "def main():\n    return {'seen': 'unsandboxed'}")
        assert failed is None and seen == "unsandboxed", failed
        assert (await http.get("/readyz")).json()["code_sandbox"]["mode"] == "UNSANDBOXED"


async def test_flow_code_enabled_false_refuses_code_nodes(app_factory):
    app = await app_factory(flow_code_enabled=False)
    async with new_user_of(app) as http:
        seen, failed = await run_code(http, "def main():\n    return {'seen': 1}")
        assert failed is not None and "flow_code_enabled=false" in failed["message"], (seen, failed)


# -- the Python API other code runners use -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    from typecase.server.sandbox import Sandbox, SandboxConfig

    started = Sandbox(SandboxConfig(tmp_bytes=256 * 1024))
    asyncio.run(started.start())
    assert started.refusal is None, started.refusal
    return started


def limits(**overrides):
    from typecase.server.sandbox import Limits

    values = {
        "wall_seconds": 20,
        "cpu_seconds": 2,
        "memory_bytes": 128 << 20,
        "output_bytes": 4096,
        "file_bytes": 1 << 20,
        **overrides,
    }
    return Limits(**values)


async def test_run_python_returns_outputs_and_stdout(sandbox):
    result = await sandbox.run_python(
        "def main(a, b):\n    print('sum', a + b)\n    return {'sum': a + b}", {"a": 2, "b": 3}, limits()
    )
    assert result.outputs == {"sum": 5} and result.stdout == "sum 5\n"
    script = await sandbox.run_python("print(inputs['word'] * 2)", {"word": "ab"}, limits(), entry=None)
    assert script.outputs == {} and script.stdout == "abab\n"


async def test_run_python_answer_may_be_exactly_as_large_as_the_output_limit(sandbox):
    from typecase.server.sandbox import LimitExceeded

    overhead = len(json.dumps({"ok": True, "outputs": {"x": ""}, "stdout": ""}))
    code = "def main(n):\n    return {'x': 'a' * n}"
    result = await sandbox.run_python(code, {"n": 4096 - overhead}, limits(output_bytes=4096))
    assert len(result.outputs["x"]) == 4096 - overhead
    with pytest.raises(LimitExceeded) as caught:
        await sandbox.run_python(code, {"n": 4096 - overhead + 1}, limits(output_bytes=4096))
    assert caught.value.limit == "output"


async def test_run_python_tmp_space_is_bounded(sandbox):
    from typecase.server.sandbox import LimitExceeded

    code = (
        "def main():\n    for i in range(8):\n        open('/tmp/%d' % i, 'wb').write(bytes(64 * 1024))\n    return {}"
    )
    with pytest.raises(LimitExceeded) as caught:
        await sandbox.run_python(code, {}, limits())
    assert caught.value.limit == "tmp_space" and "262144 bytes" in caught.value.message


async def test_run_python_errors_are_typed(sandbox):
    from typecase.server.sandbox import CodeFailed, Sandbox, SandboxConfig, SandboxUnavailable

    with pytest.raises(CodeFailed, match="ValueError: no luck"):
        await sandbox.run_python("def main():\n    raise ValueError('no luck')", {}, limits())
    with pytest.raises(CodeFailed, match="must return a dict"):
        await sandbox.run_python("def main():\n    return 3", {}, limits())
    with pytest.raises(SandboxUnavailable, match="has not been checked"):
        await Sandbox(SandboxConfig()).run_python("def main():\n    return {}", {}, limits())


UNPRIVILEGED_SERVER = """
import asyncio, json, site, sys
site.addsitedir(sys.argv[1])
from typecase.server.sandbox import Limits, LimitExceeded, Sandbox, SandboxConfig

PROBE = '''
import os
def main():
    try:
        os.fork()
        forked = True
    except PermissionError:
        forked = False
    return {"uid": os.getuid(), "forked": forked, "root": sorted(os.listdir("/"))}
'''
THREADS = ("import threading, time\\ndef main():\\n    while True:\\n"
           "        threading.Thread(target=time.sleep, args=(5,)).start()")

async def main():
    sandbox = Sandbox(SandboxConfig(max_threads=4))
    await sandbox.start()
    limits = Limits(wall_seconds=20, cpu_seconds=2, memory_bytes=128 << 20, output_bytes=4096, file_bytes=4096)
    seen = (await sandbox.run_python(PROBE, {}, limits)).outputs
    try:
        await sandbox.run_python(THREADS, {}, limits)
    except LimitExceeded as exc:
        seen["threads"] = exc.limit
    print(json.dumps(seen))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the whole suite already runs unprivileged")
def test_an_unprivileged_server_gets_the_same_sandbox_in_a_user_namespace():
    """The server as nobody (the system Python, which nobody can run, with the venv's packages on its path):
    bubblewrap then maps it into a user namespace, and the code is as confined as under a root server."""
    system_python = Path("/usr/bin/python3")
    site_packages = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    version = (
        subprocess.run(
            [str(system_python), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if system_python.exists()
        else None
    )
    if version is None or version.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("needs a system Python of the venv's version")
    done = subprocess.run(
        [str(system_python), "-c", UNPRIVILEGED_SERVER, str(site_packages)],
        user=65534,
        group=65534,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        env={},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["uid"] != 0 and seen["forked"] is False and seen["threads"] == "threads", seen
    assert set(seen["root"]) <= {"dev", "etc", "lib", "lib64", "proc", "tmp", "usr", "bin", "sbin"}, seen


@pytest.mark.parametrize("max_running, overlap", [(1, False), (2, True)])
async def test_at_most_max_running_runs_at_once(max_running, overlap):
    from typecase.server.sandbox import Sandbox, SandboxConfig

    sandbox = Sandbox(SandboxConfig(max_running=max_running))
    await sandbox.start()
    code = (
        "import time\ndef main():\n    began = time.time()\n    time.sleep(2)\n"
        "    return {'span': [began, time.time()]}"
    )
    first, second = await asyncio.gather(*(sandbox.run_python(code, {}, limits()) for _ in range(2)))
    (a0, a1), (b0, b1) = first.outputs["span"], second.outputs["span"]
    assert (a0 < b1 and b0 < a1) is overlap, (first.outputs, second.outputs)
