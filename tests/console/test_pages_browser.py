"""The console's tools, chunk editor and chat attachment pages in a real browser against a real server (and real
tool servers on loopback). Each scenario (tools.mjs, chunks.mjs, attachments.mjs) prints what the page showed; this
file checks it against what the server stored and what the tool servers received."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.console.test_browser import AUTH, CHROMIUM, NODE, scenario, start_console_server
from tests.tools.servers import start, stop

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or NODE is None,
    reason="the browser tests need Debian's chromium at /usr/bin/chromium and node on PATH",
)

SERVICE_KEY = "pets-key-for-the-console-7731"
MCP_TOKEN = "mcp-console-token-5150"


def checked(report: dict) -> dict:
    unexpected = [e for e in report.get("consoleErrors", []) if not any(
        s in e for s in ("401 (Unauthorized)", "400 (Bad Request)", "502 (Bad Gateway)", "500 (Internal Server Error)",
                         "409 (Conflict)", "404 (Not Found)", "504 (Gateway Timeout)"))]
    assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
    assert not unexpected, f"errors in the browser console: {unexpected}"
    return report.get("result", {})


def test_tools_page_imports_an_openapi_service_adds_an_mcp_server_and_tries_their_tools(server_factory):
    service, service_port = start("tests.tools.openapi_service", "{port}", SERVICE_KEY)
    mcp, mcp_port = start("tests.tools.mcp_server", "http", "{port}", MCP_TOKEN)
    try:
        # The test's tool servers listen on loopback, which the SSRF guard refuses unless allowed.
        server = start_console_server(server_factory, TYPECASE_FLOW_HTTP_ALLOWED_HOSTS='["127.0.0.1"]')
        result = checked(scenario("tools", server.http_url, OPENAPI_URL=f"http://127.0.0.1:{service_port}/openapi.json",
                                  SERVICE_KEY=SERVICE_KEY, MCP_URL=f"http://127.0.0.1:{mcp_port}/mcp",
                                  MCP_TOKEN=MCP_TOKEN))
        with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
            providers = http.get("/v1/tool-providers").json()["providers"]
            pets_service = httpx.get(f"http://127.0.0.1:{service_port}/api/pets", headers={"x-api-key": SERVICE_KEY}).json()
    finally:
        stop(service)
        stop(mcp)

    assert result["builtinCategories"].strip(), result
    assert result["currentTime"]["ok"], result["currentTime"]
    # Imported from the URL with the key: three operations, and the key reached the service.
    assert result["openapiTools"] == ["createPet", "getPet", "listPets"]
    pets = next(p for p in providers if p["name"] == "Pets")
    assert pets["id"] == result["openapiProviderId"] and pets["openapi"]["auth"]["credential_set"] is True
    assert SERVICE_KEY not in json.dumps(providers)
    assert result["getPet"]["ok"] and "Rex" in result["getPet"]["text"], result["getPet"]
    # The JSON-typed body argument reached the service as an object.
    assert result["createPet"]["ok"], result["createPet"]
    assert {"name": "Tom", "tag": "cat"}.items() <= next(p for p in pets_service if p["name"] == "Tom").items()
    # Errors: the reason and the upstream's message; a service echoing the key does not leak it to the page.
    assert result["missingPet"]["reason"] == "TOOL_FAILED" and "404" in result["missingPet"]["text"], result["missingPet"]
    assert result["echoKey"]["reason"] == "TOOL_FAILED" and SERVICE_KEY not in result["echoKey"]["text"]
    # MCP: integers from the form, the header masked, the tool's error surfaced; then deleted.
    assert result["add"]["ok"] and "42" in result["add"]["text"], result["add"]
    assert "Authorization: ****" in result["mcpHeaderShown"], result["mcpHeaderShown"]
    assert result["explode"]["reason"] == "TOOL_FAILED" and "the fuse blew" in result["explode"]["text"], result["explode"]
    assert "Calculator" not in result["providersAfterDelete"] and "Pets" in result["providersAfterDelete"]
    assert all(p["id"] != result["mcpProviderId"] for p in providers)
