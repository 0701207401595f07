"""Single sign-on with group sync and a role map, against the real OpenID Connect provider on loopback
(oidc-provider-mock): the user lands in the Typecase groups named by the groups claim (any letter case) with the
mapped role; at the next sign-in, with other groups claimed, the role and the memberships follow the claim (joined
and left, audited); with oidc_create_groups a claimed group that does not exist is created."""

from __future__ import annotations

import httpx
import oidc_provider_mock
import pytest

from tests.auth.test_oidc import CLIENT_ID, callback_on, sign_in
from tests.conftest import ADMIN_KEY

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def provider():
    alice = oidc_provider_mock.User(
        sub="alice-sub",
        claims={
            "preferred_username": "alice",
            "name": "Alice Liddell",
            "groups": ["research", "builders", "unknown-team"],
        },
    )
    with oidc_provider_mock.run_server_in_thread(port=0, require_nonce=True, user_claims=[alice]) as server:
        yield f"http://127.0.0.1:{server.server_port}"


async def start(app_factory, provider, **settings):
    return await app_factory(
        oidc_issuer=provider,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret="shh",
        oidc_redirect_uri="http://127.0.0.1:1/v1/auth/oidc/callback",
        oidc_sync_groups=True,
        oidc_role_map=["builders=builder", "readers=user"],
        **settings,
    )


async def groups_of(http: httpx.AsyncClient, user_id: str) -> list[str]:
    reply = await http.get("/v1/groups", params={"member_id": user_id}, headers=ADMIN)
    return sorted(g["name"] for g in reply.json().get("groups", []))


async def test_sign_in_syncs_groups_and_maps_the_role(app_factory, provider):
    app = await start(app_factory, provider)
    api = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=api) as http:
        ids = {}
        for name in ("Research", "Old"):
            ids[name] = (await http.post("/v1/groups", json={"name": name}, headers=ADMIN)).json()["group"]["id"]

        first = await http.get(callback_on(api, await sign_in(api, provider)), headers={"accept": "application/json"})
        assert first.status_code == 200, first.text
        user = first.json()["user"]
        assert user["role_name"] == "builder"
        assert await groups_of(http, user["id"]) == ["Research"]  # unknown-team exists nowhere: not created
        alice = {"authorization": f"Bearer {first.json()['access_token']}"}
        assert (await http.get(f"/v1/groups/{ids['Research']}", headers=alice)).status_code == 200
        added = await http.post(f"/v1/groups/{ids['Old']}/members", json={"user_id": user["id"]}, headers=ADMIN)
        assert added.status_code == 200, added.text

        # Now only in "readers" at the provider: the role maps to "user", and both groups are left.
        async with httpx.AsyncClient() as admin_api:
            assert (
                await admin_api.put(
                    f"{provider}/users/alice-sub", json={"preferred_username": "alice", "groups": ["readers"]}
                )
            ).status_code == 204
        again = await http.get(callback_on(api, await sign_in(api, provider)), headers={"accept": "application/json"})
        assert again.json()["user"]["id"] == user["id"] and again.json()["user"]["role_name"] == "user"
        assert await groups_of(http, user["id"]) == []
        # The first sign-in's token follows at once: no longer a member, no longer a builder.
        assert (await http.get(f"/v1/groups/{ids['Research']}", headers=alice)).status_code == 404
        assert (await http.post("/v1/flows", json={"name": "f"}, headers=alice)).status_code == 403

        events = (
            await http.get("/v1/admin/audit", params={"action": "login", "resource_id": user["id"]}, headers=ADMIN)
        ).json()["events"]
        detail = events[0]["detail"]
        assert sorted(detail["left"]) == ["Old", "Research"] and detail["joined"] == []
        assert detail["before"]["role"] == "builder" and detail["after"]["role"] == "user"


async def test_missing_groups_are_created_when_allowed(app_factory, provider):
    app = await start(app_factory, provider, oidc_create_groups=True)
    api = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=api) as http:
        signed_in = await http.get(
            callback_on(api, await sign_in(api, provider)), headers={"accept": "application/json"}
        )
        user = signed_in.json()["user"]
        assert await groups_of(http, user["id"]) == ["builders", "research", "unknown-team"]
