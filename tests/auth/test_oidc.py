"""Single sign-on against a real OpenID Connect provider on loopback (oidc-provider-mock: Authlib's authorization
server on Flask): the authorization code flow with PKCE, the user created on first sign-in with its role mapped
from the groups claim (and re-mapped on the next), the ID token's nonce and the state spent once, no open redirect."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import oidc_provider_mock
import pytest

CLIENT_ID = "typecase-test"


@pytest.fixture
def provider():
    alice = oidc_provider_mock.User(
        sub="alice-sub",
        claims={
            "preferred_username": "alice",
            "name": "Alice Liddell",
            "email": "alice@example.test",
            "groups": ["research", "typecase-admins"],
        },
    )
    with oidc_provider_mock.run_server_in_thread(port=0, require_nonce=True, user_claims=[alice]) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
async def sso(app_factory, provider):
    probe = await app_factory(
        oidc_issuer=provider,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret="shh",
        oidc_redirect_uri="http://127.0.0.1:1/v1/auth/oidc/callback",
        oidc_admin_groups=["typecase-admins"],
    )
    return probe, provider


async def sign_in(api: str, provider: str, sub: str = "alice-sub", next_path: str = "/chats") -> str:
    """Runs the browser's part: returns the callback URL the provider redirected to."""
    async with httpx.AsyncClient() as http:
        start = await http.get(f"{api}/v1/auth/oidc/login", params={"next": next_path})
        assert start.status_code == 302
        authorize = start.headers["location"]
        query = parse_qs(urlsplit(authorize).query)
        assert authorize.startswith(provider) and query["code_challenge_method"] == ["S256"]
        assert query["client_id"] == [CLIENT_ID] and query["nonce"] and query["state"]
        assert "openid" in query["scope"][0].split()
        granted = await http.post(authorize, data={"sub": sub})
        assert granted.status_code == 302, granted.text
        return granted.headers["location"]


def callback_on(api: str, location: str) -> str:
    parts = urlsplit(location)
    return f"{api}{parts.path}?{parts.query}"


async def test_oidc_round_trip_creates_the_user_with_the_mapped_role(sso):
    app, provider = sso
    api = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=api) as http:
        callback = callback_on(api, await sign_in(api, provider))
        signed_in = await http.get(callback, headers={"accept": "application/json"})
        assert signed_in.status_code == 200, signed_in.text
        body = signed_in.json()
        assert body["user"]["username"] == "alice" and body["user"]["display_name"] == "Alice Liddell"
        assert body["user"]["role"] == "USER_ROLE_ADMIN"
        me = await http.get("/v1/auth/me", headers={"authorization": f"Bearer {body['access_token']}"})
        assert me.json()["user"]["id"] == body["user"]["id"]
        refreshed = await http.post("/v1/auth:refresh", json={"refresh_token": body["refresh_token"]})
        assert refreshed.status_code == 200
        # The state is spent: the same callback (a replayed or leaked URL) signs nobody in.
        replay = await http.get(callback, headers={"accept": "application/json"})
        assert replay.status_code == 400 and "already used" in replay.json()["message"]

        # Out of the admin group at the provider: the same account, now a user.
        async with httpx.AsyncClient() as admin_api:
            assert (
                await admin_api.put(
                    f"{provider}/users/alice-sub", json={"preferred_username": "alice", "groups": ["research"]}
                )
            ).status_code == 204
        again = await http.get(callback_on(api, await sign_in(api, provider)), headers={"accept": "application/json"})
        assert again.json()["user"]["id"] == body["user"]["id"] and again.json()["user"]["role"] == "USER_ROLE_USER"
        events = await http.get(
            "/v1/admin/audit",
            params={"resource_id": body["user"]["id"]},
            headers={"authorization": f"Bearer {body['access_token']}"},
        )
        assert events.status_code == 403  # the first sign-in's token lost its admin rights with the account's role


async def test_the_browser_gets_its_tokens_in_the_fragment_and_only_on_this_server(sso):
    app, provider = sso
    api = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=api) as http:
        done = await http.get(callback_on(api, await sign_in(api, provider, next_path="/chats?x=1")))
        assert done.status_code == 302
        target = urlsplit(done.headers["location"])
        assert target.path == "/chats" and target.query == "x=1" and "access_token=" in target.fragment
        evil = await http.get(callback_on(api, await sign_in(api, provider, next_path="//evil.test/steal")))
        assert urlsplit(evil.headers["location"]).path == "/" and not urlsplit(evil.headers["location"]).netloc


async def test_forged_or_refused_callbacks_sign_nobody_in(sso):
    app, provider = sso
    api = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=api) as http:
        location = await sign_in(api, provider)
        query = parse_qs(urlsplit(location).query)
        forged = await http.get("/v1/auth/oidc/callback", params={"code": query["code"][0], "state": "made-up"})
        assert forged.status_code == 400
        refused = await http.get(
            "/v1/auth/oidc/callback", params={"error": "access_denied", "state": query["state"][0]}
        )
        assert refused.status_code == 401 and "access_denied" in refused.json()["message"]
        bad_code = await http.get("/v1/auth/oidc/callback", params={"code": "not-a-code", "state": query["state"][0]})
        assert bad_code.status_code == 401 and "refused the code" in bad_code.json()["message"]


def test_sso_settings_must_be_complete():
    from typecase.server.config import Settings

    with pytest.raises(ValueError, match="oidc_client_id and oidc_redirect_uri must be set"):
        Settings(_env_file=None, oidc_issuer="https://id.example.test")
