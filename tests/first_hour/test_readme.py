"""Issue 24 items 5 and 10: the README's commands paste and run as they are.

The test clones the repository (its committed HEAD) into a temp dir, starts the server there the way `make run`
does (install excepted: this venv is given), and runs every ```sh block of the README in one bash session, in
order, with `set -euo pipefail`. Blocks that install or start things (`make`, `apt`, `dnf`) are the exceptions.
Only what cannot be literal is rewritten: the ports (other servers share this machine, so the test's are free
ones), `.venv/bin/` (the given venv) and Ollama's address (a real server speaking OpenAI's wire format stands in
for it). It gets a streamed answer, an OpenAI-compatible answer, a gRPC answer and, after `add-provider`, an answer
from the provider made the default. grpcurl is used when installed; where it is not (this machine), the gRPC
block is left out and the same call is made with the generated Python stub, as the README's reader would with an
SDK.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.llm.fake_upstream import FakeUpstream
from typecase.v1 import common_pb2, llm_pb2, llm_pb2_grpc

BLOCK = re.compile(r"^( *)```sh\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
INSTALLS = ("make ", "apt ", "dnf ")
MARK = "@@block"


def sh_blocks(readme: str) -> list[str]:
    blocks = []
    for indent, body in BLOCK.findall(readme):
        lines = [line[len(indent) :] for line in body.splitlines()]
        blocks.append("\n".join(lines))
    return blocks


def runnable(block: str) -> bool:
    return not any(line.lstrip().startswith(INSTALLS) for line in block.splitlines())


@pytest.fixture
def clone(tmp_path) -> Path:
    target = tmp_path / "typecase"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(target)], check=True, timeout=120)
    return target


def test_readme_has_no_reference_outside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme
    assert "](docs/architecture.md)" in readme
    for name in ("First requests", "What next"):
        assert f"## {name}" in readme
    assert "<model id>" not in readme


def test_the_readme_commands_run_as_pasted(clone, tmp_path):
    readme = (clone / "README.md").read_text()
    blocks = [b for b in sh_blocks(readme) if runnable(b)]
    assert len(blocks) >= 5, blocks
    grpcurl = shutil.which("grpcurl")
    if grpcurl is None:  # not installed here; the gRPC answer is checked with the Python stub below
        blocks = [b for b in blocks if not b.lstrip().startswith("grpcurl")]

    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPECASE_")}
    env.update({"HF_HUB_OFFLINE": "1", "TYPECASE_HTTP_PORT": str(http_port), "TYPECASE_GRPC_PORT": str(grpc_port)})
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "typecase"), "serve"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    upstream = FakeUpstream().start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)

        script = ["set -euo pipefail"]
        for i, block in enumerate(blocks):
            text = (
                block.replace("localhost:8080", f"localhost:{http_port}")
                .replace("localhost:50051", f"localhost:{grpc_port}")
                .replace(".venv/bin/", f"{Path(sys.executable).parent}/")
                .replace("http://localhost:11434/v1", f"{upstream.base_url}/v1")
            )
            script += [f"echo '{MARK} {i}'", text, "echo"]
        result = subprocess.run(
            ["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs = {int(part.split("\n", 1)[0]): part.split("\n", 1)[1] for part in result.stdout.split(MARK + " ")[1:]}
        by_block = {i: (blocks[i], outputs[i]) for i in outputs}

        def output_of(needle: str) -> str:
            return next(out for block, out in by_block.values() if needle in block)

        first = output_of("readyz")
        assert '"status":"ready"' in first.replace(" ", "") and "smollm2-135m-instruct" in first

        streamed = output_of("accept: text/event-stream")
        events = [json.loads(line[len("data: ") :]) for line in streamed.splitlines() if line.startswith("data: ")]
        assert len(events) > 1 and "".join(e["text"] for e in events).strip(), streamed
        assert events[-1]["finish_reason"] in ("FINISH_REASON_STOP", "FINISH_REASON_LENGTH")

        openai = json.loads(output_of('smollm2-135m-instruct","messages":[{"role":"user"').strip())
        assert openai["object"] == "chat.completion" and openai["choices"][0]["message"]["content"]

        added = output_of("add-provider")
        assert "provider 'ollama' added with llama3.2; llama3.2 is now the default model" in added
        answer = json.loads(added[added.index("{") :].strip())
        assert "error" not in answer, answer
        assert answer["model"] == "llama3.2" and answer["choices"][0]["message"]["content"]
        assert upstream.hits("/chat/completions") == 1  # the answer came from the added provider

        key = (clone / ".typecase" / "admin_api_key").read_text().strip()
        defaults = httpx.get(
            f"http://127.0.0.1:{http_port}/v1/llm/defaults", headers={"authorization": f"Bearer {key}"}
        ).json()["defaults"]
        models = httpx.get(
            f"http://127.0.0.1:{http_port}/v1/models", headers={"authorization": f"Bearer {key}"}
        ).json()["models"]
        assert defaults["chat_model_id"] == next(m["id"] for m in models if m["name"] == "llama3.2")

        if grpcurl is None:  # the README's grpcurl call, made with the stub the SDK uses
            with grpc.insecure_channel(f"localhost:{grpc_port}") as channel:
                replies = list(
                    llm_pb2_grpc.LLMServiceStub(channel).Generate(
                        llm_pb2.GenerateRequest(
                            model_id="smollm2-135m-instruct",
                            messages=[llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content="Hello!")],
                        ),
                        metadata=(("authorization", f"Bearer {key}"),),
                        timeout=120,
                    )
                )
            assert len(replies) > 1
        else:
            assert output_of("grpcurl").count("{") > 1
    finally:
        upstream.stop()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
