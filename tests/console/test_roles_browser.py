"""The console's Roles page and the Access page's role selector in a real browser against a real server:
roles.mjs creates a custom role with permission checkboxes, edits it, deletes another, and assigns it to a user;
this file checks what the server stored and that the assigned user now holds the role's permission. A group admin
(without roles.manage and users.manage) then sees the same pages without the role controls."""

from __future__ import annotations

import httpx
import pytest

from tests.console.test_browser import AUTH, CHROMIUM, NODE, scenario, start_console_server

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or NODE is None,
    reason="the browser tests need Debian's chromium at /usr/bin/chromium and node on PATH",
)

MEMBER = "dora-roles"
GUEST = "gina-roles"
PASSWORD = "correct horse battery 93"


def test_roles_page_creates_edits_deletes_and_assigns_a_custom_role(server_factory):
    server = start_console_server(server_factory)
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        r = http.post("/v1/users", json={"username": MEMBER, "password": PASSWORD})
        assert r.status_code == 200, r.text
        member_id = r.json()["user"]["id"]
        r = http.post("/v1/users", json={"username": GUEST, "password": PASSWORD, "role_name": "group_admin"})
        assert r.status_code == 200, r.text

        report = scenario("roles", server.http_url, MEMBER=MEMBER, GUEST=GUEST, PASSWORD=PASSWORD)
        unexpected = [e for e in report.get("consoleErrors", []) if "401 (Unauthorized)" not in e]
        assert report["ok"], f"{report.get('error')}\n{report.get('stderr', '')}"
        assert not unexpected, f"errors in the browser console: {unexpected}"
        result = report["result"]

        role = http.get("/v1/roles/auditors").json()["role"]
        assert role["permissions"] == ["audit.read"] and role["description"] == "Read the audit log"
        assert http.get("/v1/roles/scratch").status_code == 404
        assert http.get(f"/v1/users/{member_id}").json()["user"]["role_name"] == "auditors"
        known = len(http.get("/v1/permissions").json()["permissions"])

    assert result["builtInDisabled"] is True, result
    # The admin has every role control; the group admin sees the role and its permissions, and none of them.
    assert result["adminControls"] == {"create": 1, "remove": 1, "save": 1, "enabledBoxes": known}, result
    assert result["guestControls"] == {"create": 0, "remove": 0, "save": 0, "enabledBoxes": 0}, result
    assert result["guestSeesPermissions"] == known > 0, result
    assert result["guestRoleSelects"] == 0 and result["guestSeesRoleOf"] == "auditors", result
    assert result["roles"][:4] == ["admin", "group_admin", "builder", "user"] and "auditors" in result["roles"], result
    login = httpx.post(f"{server.http_url}/v1/auth:login", json={"username": MEMBER, "password": PASSWORD})
    member = {"authorization": f"Bearer {login.json()['access_token']}"}
    assert httpx.get(f"{server.http_url}/v1/admin/audit", headers=member).status_code == 200
