"""An assistant's Share and Publish as API dialogs in Chromium (publish.mjs): the grant the dialog made is the one
the server holds (edit, to the named user), and the key the Publish dialog created opens that assistant's chat and
nothing else; the snippet shown frames /embed/assistants/<id> with the key in the fragment."""

from __future__ import annotations

import httpx
import pytest

from tests.console.test_browser import AUTH, CHROMIUM, NODE, scenario, start_console_server

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or NODE is None, reason="needs Debian's chromium and node")

MEMBER = "bob-publish"


def test_an_assistant_is_shared_and_published_as_api_from_the_console(server_factory):
    server = start_console_server(server_factory)
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        r = http.post("/v1/users", json={"username": MEMBER, "password": "correct horse battery 7",
                                         "role": "USER_ROLE_USER"})
        assert r.status_code == 200, r.text
        member_id = r.json()["user"]["id"]
        assistant = http.post("/v1/assistants", json={"name": "Front desk"}).json()["assistant"]

        report = scenario("publish", server.http_url, ASSISTANT_ID=assistant["id"], MEMBER=MEMBER)
        unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
        assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
        assert not unexpected, unexpected
        result = report["result"]

        grants = http.get("/v1/grants", params={"resource_type": "assistant",
                                                "resource_id": assistant["id"]}).json()["grants"]
        assert [(g["grantee_type"], g["grantee_id"], g["level"]) for g in grants] == [
            ("GRANTEE_TYPE_USER", member_id, "SHARE_LEVEL_EDIT")], grants
        assert result["grants"] == [{"grantee": f"user {MEMBER}", "level": "edit"}], result

        secret = result["secret"]
        assert f'{server.http_url}/embed/assistants/{assistant["id"]}#key={secret}' in result["snippet"]
        keys = http.get("/v1/api-keys").json()["api_keys"]
        published = [k for k in keys if k.get("resources") == [f"assistant/{assistant['id']}"]]
        assert len(published) == 1 and published[0]["actions"] == ["chat"], keys
        # The key opens nothing but that assistant's chat.
        key = {"authorization": f"Bearer {secret}"}
        assert httpx.get(f"{server.http_url}/v1/assistants", headers=key).status_code == 403
        other = http.post("/v1/assistants", json={"name": "Back office"}).json()["assistant"]
        assert httpx.post(f"{server.http_url}/v1/sessions", json={"assistant_id": other["id"]},
                          headers=key).status_code == 403
