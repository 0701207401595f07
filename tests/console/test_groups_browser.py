"""The console's Groups page and the knowledge base Share dialog in a real browser against a real server: groups.mjs
creates a group, adds a member by username (as a group admin) and shares a knowledge base with the group; this file
checks what the server stored, that the member signed in on the console sees the group without the admin-only
buttons, and that the member now sees the knowledge base through the API."""

from __future__ import annotations

import httpx
import pytest

from tests.console.test_browser import AUTH, CHROMIUM, NODE, scenario, start_console_server

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or NODE is None,
    reason="the browser tests need Debian's chromium at /usr/bin/chromium and node on PATH",
)

MEMBER = "alice-groups"
PASSWORD = "correct horse battery 93"


def test_groups_page_adds_a_member_and_a_knowledge_base_is_shared_with_the_group(server_factory):
    server = start_console_server(server_factory)
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        r = http.post("/v1/users", json={"username": MEMBER, "password": PASSWORD, "role": "USER_ROLE_USER"})
        assert r.status_code == 200, r.text
        member_id = r.json()["user"]["id"]
        kb = http.post("/v1/knowledge-bases", json={"name": "Team notes"}).json()["knowledge_base"]
        # Before sharing, the member does not see the admin's knowledge base.
        login = httpx.post(f"{server.http_url}/v1/auth:login", json={"username": MEMBER, "password": PASSWORD})
        assert login.status_code == 200, login.text
        member = {"authorization": f"Bearer {login.json()['access_token']}"}
        before = httpx.get(f"{server.http_url}/v1/knowledge-bases", headers=member).json()
        assert kb["id"] not in [k["id"] for k in before.get("knowledge_bases", [])]

        report = scenario("groups", server.http_url, MEMBER=MEMBER, PASSWORD=PASSWORD, KB_ID=kb["id"])
        unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
        assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
        assert not unexpected, f"errors in the browser console: {unexpected}"
        result = report["result"]

        group_id = result["groupId"]
        members = http.get(f"/v1/groups/{group_id}/members").json()["members"]
        grants = http.get("/v1/grants", params={"resource_type": "knowledge_base", "resource_id": kb["id"]}).json()["grants"]
        after = httpx.get(f"{server.http_url}/v1/knowledge-bases", headers=member).json()

    assert http_group(server, group_id) == ("research", "Reading group")
    # Added by username: stored under the user's id, as a group admin.
    assert [(m["user_id"], m.get("group_admin", False)) for m in members] == [(member_id, True)]
    assert result["memberBadge"] == "group admin" and "1 member" in result["listSub"], result
    # The page listed both grants, then the revoked one went; the server holds the group grant at edit level only.
    assert result["groupLevelGranted"] == "use", result
    assert {g["grantee"] for g in result["grantsBeforeRevoke"]} == {"group research", f"user {MEMBER}"}, result
    assert result["grants"] == [{"grantee": "group research", "level": "edit"}], result
    assert [(g["grantee_type"], g["grantee_id"], g["level"]) for g in grants] == [
        ("GRANTEE_TYPE_GROUP", group_id, "SHARE_LEVEL_EDIT")
    ], grants
    # The member, signed in on the console, sees their group without the admin-only buttons.
    assert result["memberGroups"] == ["research"], result
    assert result["memberSeesCreate"] == 0 and result["memberSeesDelete"] == 0, result
    # The grant works: the member now sees the knowledge base.
    assert kb["id"] in [k["id"] for k in after.get("knowledge_bases", [])], after


def http_group(server, group_id: str) -> tuple[str, str]:
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        group = http.get(f"/v1/groups/{group_id}").json()["group"]
    return group["name"], group.get("description", "")
