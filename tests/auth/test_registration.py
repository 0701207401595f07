"""Self-registration (off, invite-only, open), invite codes (used once, expired, revoked, never overspent, an
admin's role), password rules and the optional account lockout, through the public API on the real server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest

from tests.auth.test_auth import bearer, reason
from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PASSWORD = "correct horse battery"


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)


async def invite(http: httpx.AsyncClient, **fields) -> str:
    reply = await http.post("/v1/invite-codes", json=fields, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return reply.json()["code"]


def register(http: httpx.AsyncClient, username: str, password: str = PASSWORD, **fields):
    return http.post("/v1/auth:register", json={"username": username, "password": password, **fields})


def error_reason(reply: httpx.Response) -> str:
    return next(d["reason"] for d in reply.json()["details"] if d.get("@type", "").endswith("ErrorInfo"))


async def test_registration_is_off_by_default(app_factory):
    app = await app_factory()
    async with client(app) as http:
        reply = await register(http, "mallory")
        assert reply.status_code == 403 and error_reason(reply) == "REGISTRATION_CLOSED"
        assert "ask an admin" in reply.json()["message"]
        assert (
            await http.post("/v1/auth:login", json={"username": "mallory", "password": PASSWORD})
        ).status_code == 401


async def test_an_invite_code_registers_and_signs_in_once(app_factory):
    app = await app_factory(auth_self_registration="invite")
    async with client(app) as http:
        assert error_reason(await register(http, "nocode")) == "REGISTRATION_CLOSED"
        code = await invite(http, note="for ada")
        reply = await register(http, "Ada", invite_code=code, display_name="Ada Lovelace")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["user"]["username"] == "Ada" and body["user"]["role"] == "USER_ROLE_USER"
        me = await http.get("/v1/auth/me", headers={"authorization": f"Bearer {body['access_token']}"})
        assert me.json()["user"]["display_name"] == "Ada Lovelace"
        # Used up: a second account cannot use it; a wrong code is refused alike.
        again = await register(http, "eve", invite_code=code)
        assert again.status_code == 403 and error_reason(again) == "INVITE_CODE_INVALID"
        assert error_reason(await register(http, "eve", invite_code="inv_guess")) == "INVITE_CODE_INVALID"
        listed = (await http.get("/v1/invite-codes", headers=ADMIN)).json()["invite_codes"]
        assert [(c["note"], c["use_count"], c["max_uses"]) for c in listed] == [("for ada", 1, 1)]
        assert code not in str(listed) and listed[0]["prefix"] == code[:8]


async def test_a_refused_registration_spends_nothing_and_codes_expire_and_are_revoked(app_factory):
    app = await app_factory(auth_self_registration="invite")
    async with client(app) as http:
        code = await invite(http, max_uses=1)
        taken = await register(http, "admin", invite_code=code)  # the bootstrap admin's name, in use
        assert taken.status_code == 409 and taken.json()["details"][0]["metadata"]["field"] == "username"
        short = await register(http, "bob", password="short", invite_code=code)
        assert short.status_code == 400 and "password" in short.json()["message"]
        assert (await register(http, "bob", invite_code=code)).status_code == 200  # still one use left

        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        expiring = await invite(http, expire_time=soon)
        revoked = await invite(http)
        revoked_id = (await http.get("/v1/invite-codes", headers=ADMIN)).json()["invite_codes"][0]["id"]
        assert (await http.delete(f"/v1/invite-codes/{revoked_id}", headers=ADMIN)).status_code == 200
        assert error_reason(await register(http, "carol", invite_code=revoked)) == "INVITE_CODE_INVALID"
        await asyncio.sleep(2.5)
        assert error_reason(await register(http, "dave", invite_code=expiring)) == "INVITE_CODE_INVALID"


async def test_concurrent_registrations_never_overspend_a_code(app_factory):
    app = await app_factory(auth_self_registration="invite")
    async with client(app) as http:
        code = await invite(http, max_uses=3)
        replies = await asyncio.gather(*(register(http, f"user{i}", invite_code=code) for i in range(8)))
        assert sorted(r.status_code for r in replies) == [200] * 3 + [403] * 5


async def test_an_admin_invite_makes_an_admin_and_only_admins_manage_codes(app_factory):
    app = await app_factory(auth_self_registration="invite")
    async with client(app) as http:
        code = await invite(http, role="USER_ROLE_ADMIN")
        body = (await register(http, "root2", invite_code=code)).json()
        assert body["user"]["role"] == "USER_ROLE_ADMIN"
        user_code = await invite(http)
        user = (await register(http, "plain", invite_code=user_code)).json()
        as_user = {"authorization": f"Bearer {user['access_token']}"}
        assert (await http.post("/v1/invite-codes", json={}, headers=as_user)).status_code == 403
        assert (await http.get("/v1/invite-codes", headers=as_user)).status_code == 403
        # The admin invited by code may invite too.
        assert (
            await http.post("/v1/invite-codes", json={}, headers={"authorization": f"Bearer {body['access_token']}"})
        ).status_code == 200


async def test_open_registration_and_password_rules(app_factory):
    app = await app_factory(
        auth_self_registration="open", password_min_length=12, password_required_character_classes=3
    )
    async with client(app) as http:
        weak = await register(http, "frank", password="alllowercaseletters")
        assert weak.status_code == 400 and weak.json()["details"][0]["metadata"]["field"] == "password"
        assert "at least 3 of" in weak.json()["message"]
        assert (await register(http, "frank", password="Short1!")).status_code == 400
        assert (await register(http, "frank", password="Mixed-Case-42")).status_code == 200
        # The same rules apply to admins creating users.
        made = await http.post("/v1/users", json={"username": "gina", "password": "alllowercaseletters"}, headers=ADMIN)
        assert made.status_code == 400 and "user.password" in made.json()["message"]


async def test_lockout_when_enabled_locks_even_the_right_password_until_reset(app_factory):
    app = await app_factory(account_lockout_failures=3, account_lockout_seconds=600, login_failures_limit="100/minute")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    try:
        user = (
            await auth.CreateUser(
                auth_pb2.CreateUserRequest(user=auth_pb2.User(username="henry", password=PASSWORD)),
                metadata=bearer(ADMIN_KEY),
            )
        ).user
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await auth.Login(auth_pb2.LoginRequest(username="henry", password="wrong password!"))
            assert reason(wrong.value) == "INVALID_CREDENTIALS"
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await auth.Login(auth_pb2.LoginRequest(username="henry", password=PASSWORD))
        assert locked.value.code() == grpc.StatusCode.UNAUTHENTICATED and reason(locked.value) == "ACCOUNT_LOCKED"
        assert "ask an admin" in locked.value.details()
        # An admin's password reset unlocks it.
        await auth.UpdateUser(
            auth_pb2.UpdateUserRequest(
                user=auth_pb2.User(id=user.id, password="a brand new password"), update_mask={"paths": ["password"]}
            ),
            metadata=bearer(ADMIN_KEY),
        )
        await auth.Login(auth_pb2.LoginRequest(username="henry", password="a brand new password"))
    finally:
        await channel.close()


async def test_without_lockout_failures_never_lock_the_owner_out(app_factory):
    app = await app_factory(login_failures_limit="100/minute")
    async with client(app) as http:
        assert (
            await http.post("/v1/users", json={"username": "ivy", "password": PASSWORD}, headers=ADMIN)
        ).status_code == 200
        for _ in range(12):
            assert (
                await http.post("/v1/auth:login", json={"username": "ivy", "password": "nope nope"})
            ).status_code == 401
        assert (await http.post("/v1/auth:login", json={"username": "ivy", "password": PASSWORD})).status_code == 200
