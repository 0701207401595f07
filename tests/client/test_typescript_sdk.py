"""The TypeScript SDK's tests (clients/typescript/src/test, compiled to dist/test by `make ts`), run with
`node --test` against a real `typecase serve`: unary calls through the generic HTTP mapping, typed errors, login,
chat turns streamed by the local model over SSE, NDJSON and WebSocket, automatic resume after cut connections,
stopping and cancelling, and knowledge uploads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ADMIN_KEY, ROOT

TS_DIR = ROOT / "clients" / "typescript"
DIST_TESTS = TS_DIR / "dist" / "test"
NODE_TIMEOUT_SECONDS = 300


def _node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    assert match, f"unexpected node --version output: {version!r}"
    return int(match.group(1))


def _compiled_tests() -> list[str]:
    tests = sorted(DIST_TESTS.glob("*.test.js"))
    assert tests, f"{DIST_TESTS} has no compiled tests: build the SDK with `make ts`"
    built = min(path.stat().st_mtime for path in tests)
    stale = [p for p in (TS_DIR / "src").rglob("*.ts") if "gen" not in p.parts and p.stat().st_mtime > built]
    assert not stale, f"the SDK build is older than {stale[0].relative_to(ROOT)}: rebuild it with `make ts`"
    return [str(path) for path in tests]


def test_typescript_sdk_against_a_live_server(server_factory):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TypeScript SDK tests need Node.js 20 or newer")
    tests = _compiled_tests()
    server = server_factory(
        env={
            "TYPECASE_JOBS_POLL_SECONDS": "0.2",
            "TYPECASE_JOBS_RETRY_BACKOFF_SECONDS": "0.2",
            "TYPECASE_KNOWLEDGE_WATCH_POLL_SECONDS": "0.2",
        }
    )
    server.start()
    server.wait_ready()

    # Node 20 has WebSocket only behind a flag (it is global from Node 22 on).
    flags = ["--experimental-websocket"] if _node_major(node) < 22 else []
    env = {**os.environ, "TYPECASE_URL": server.http_url, "TYPECASE_API_KEY": ADMIN_KEY, "NODE_NO_WARNINGS": "1"}
    run = subprocess.run(
        [node, *flags, "--test", "--test-concurrency=1", "--test-reporter=spec", *tests],
        cwd=TS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
    )
    output = run.stdout + run.stderr
    print(output)
    assert run.returncode == 0, (
        f"node --test exited with {run.returncode}:\n{output}\n--- server log (last 4000 chars) ---\n"
        f"{server.output()[-4000:]}"
    )
    assert re.search(r"^\S*\s*pass \d+", output, re.M) and not re.search(r"^\S*\s*fail [1-9]", output, re.M), output
