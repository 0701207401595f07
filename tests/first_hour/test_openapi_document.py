"""Issue 24 item 9: /openapi.json is a valid OpenAPI 3.1 document that declares the bearer key, lists every route
the server answers (the transcoded API, /openai/v1, /anthropic/v1, /healthz, /readyz, /metrics), gives whole-
sentence summaries and example bodies that show message shapes; /docs labels and keeps the key; no favicon 404."""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from tests.conftest import ADMIN_KEY, ROOT


@pytest.fixture
async def http(running_app):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}", timeout=30) as client:
        yield client


@pytest.fixture
async def document(http):
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document):
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield path, method, op


async def test_the_document_validates_as_openapi_3_1_and_declares_bearer_auth(document):
    validate(document, cls=OpenAPIV31SpecValidator)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert {"bearerAuth": []} in document["security"]
    assert document["paths"]["/healthz"]["get"]["security"] == []  # no key needed


async def test_every_route_the_server_answers_is_listed(document, http):
    paths = document["paths"]
    for path in (
        "/openai/v1/chat/completions",
        "/openai/v1/embeddings",
        "/openai/v1/models",
        "/anthropic/v1/messages",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/models/{model_id}:generate",
        "/v1/knowledge-bases",
    ):
        assert path in paths, path
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for path in ("/healthz", "/readyz", "/metrics"):  # listed routes answer
        assert (await http.get(path)).status_code == 200, path
    models = await http.get("/openai/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert models.status_code == 200


async def test_summaries_are_whole_sentences(document):
    for path, method, op in operations(document):
        summary = op.get("summary", "")
        assert summary, (path, method)
        assert re.search(r"[.!?]$", summary) and "\n" not in summary, (path, method, summary)
    generate = document["paths"]["/v1/models/{model_id}:generate"]["post"]
    assert generate["summary"].endswith(".") and len(generate["summary"].split()) > 3


async def test_example_bodies_show_message_shapes(document):
    generate = document["paths"]["/v1/models/{model_id}:generate"]["post"]
    example = generate["requestBody"]["content"]["application/json"]["example"]
    assert "model_id" not in example  # it is in the path
    message = example["messages"][0]
    assert message["role"].startswith("MESSAGE_ROLE_") and "content" in message
    openai = document["paths"]["/openai/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert [m["role"] for m in openai["example"]["messages"]] == ["system", "user"]


async def test_the_examples_are_accepted_by_the_server(document, http):
    """An example that the unknown-field check refused would teach the wrong shape."""
    example = document["paths"]["/v1/knowledge-bases"]["post"]["requestBody"]["content"]["application/json"]
    body = {**example["example"], "name": "from-the-example", "embedding_model_id": ""}  # the default model
    assert "name" in example["example"]
    r = await http.post("/v1/knowledge-bases", json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text


async def test_docs_page_labels_and_keeps_the_key_and_the_favicon_exists(http):
    docs = (await http.get("/docs")).text
    assert '<label for="token">API key' in docs and "sessionStorage" in docs
    assert "JSON.stringify(JSON.parse(text), null, 2)" in docs  # responses pretty-printed
    icon = await http.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")


OPENAPI_TS = ROOT / ".tools" / "openapi-typescript" / "node_modules" / ".bin"


async def test_the_document_imports_cleanly_into_a_client_generator(document, tmp_path):
    """openapi-typescript turns the document into types, and TypeScript compiles them strictly."""
    if not (OPENAPI_TS / "openapi-typescript").exists():
        pytest.skip("openapi-typescript is not installed: `make openapi-ts` (part of `make test`) installs it")
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    generated = tmp_path / "api.ts"
    result = subprocess.run(
        [str(OPENAPI_TS / "openapi-typescript"), str(spec), "-o", str(generated)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warn" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    text = generated.read_text()
    assert '"/openai/v1/chat/completions"' in text and '"/v1/models/{model_id}:generate"' in text
    check = subprocess.run(
        [str(OPENAPI_TS / "tsc"), "--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", str(generated)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
