"""Issue 18, authentication: each attack through the public API (REST and gRPC), as an ordinary client.

Addresses: the test machine has only loopback, but Linux answers every 127.0.0.0/8 address, so an HTTP client bound
to 127.0.0.2 is a second machine as far as the server can tell (gRPC clients cannot choose their source address:
they are 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import httpx
import pytest

from tests.auth.test_auth import bearer, reason
from tests.conftest import ADMIN_KEY
from typecase.v1 import auth_pb2, auth_pb2_grpc

PASSWORD = "correct horse battery"
ELSEWHERE = "127.0.0.2"


def http(app, local_address: str | None = None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", transport=transport, timeout=30)


async def grpc_auth(app):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    return channel, auth_pb2_grpc.AuthServiceStub(channel)


async def create_user(auth, username: str, password: str = PASSWORD) -> auth_pb2.User:
    reply = await auth.CreateUser(
        auth_pb2.CreateUserRequest(user=auth_pb2.User(username=username, password=password)), metadata=bearer(ADMIN_KEY)
    )
    return reply.user


async def grpc_code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# -- finding 1: the failed-authentication budgets -------------------------------------------------------------------
async def test_rotating_x_forwarded_for_does_not_buy_more_guesses(app_factory):
    app = await app_factory(credential_failures_limit="5/minute")
    async with http(app) as client:
        statuses = [
            (
                await client.get(
                    "/v1/auth/me",
                    headers={"authorization": f"Bearer tc_guess{i:030d}", "x-forwarded-for": f"203.0.113.{i}"},
                )
            ).status_code
            for i in range(7)
        ]
    assert statuses == [401] * 5 + [429] * 2


async def test_a_valid_key_is_never_refused_for_failures_from_its_address(app_factory):
    app = await app_factory(credential_failures_limit="3/minute")
    channel, auth = await grpc_auth(app)
    async with channel, http(app) as client:
        for i in range(4):  # someone on this address (a NAT, an unlisted proxy) guesses over gRPC and REST
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(f"tc_wrong{i:030d}")))
            await client.get("/v1/auth/me", headers={"authorization": f"Bearer tc_wrong{i:030d}"})
        over = await client.get("/v1/auth/me", headers={"authorization": "Bearer tc_one-more-wrong-key-000000"})
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        assert over.json()["details"][0]["reason"] == "RATE_LIMITED"
        assert (await client.get("/v1/auth/me", headers={"authorization": f"Bearer {ADMIN_KEY}"})).status_code == 200
        assert await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(ADMIN_KEY))) == grpc.StatusCode.OK
        assert (
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer("tc_wrong-again-000000000000")))
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )


async def test_guesses_at_one_key_prefix_are_throttled_from_every_address_but_the_key_works(app_factory):
    app = await app_factory(credential_failures_limit="100/minute", credential_failures_per_key_prefix_limit="4/minute")
    channel, auth = await grpc_auth(app)
    async with channel:
        created = await auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(api_key=auth_pb2.ApiKey(name="target")), metadata=bearer(ADMIN_KEY)
        )
        prefix = created.api_key.prefix  # what the key's list shows
        statuses = []
        for i in range(6):  # two machines, each trying keys that start like the target
            async with http(app, ELSEWHERE if i % 2 else None) as client:
                statuses.append(
                    (await client.get("/v1/auth/me", headers={"authorization": f"Bearer {prefix}{i:040d}"})).status_code
                )
        assert statuses == [401] * 4 + [429] * 2
        assert (
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(created.secret))) == grpc.StatusCode.OK
        )
        other = "tc_" + ("A" if prefix[3] != "A" else "B") + "x" * 40  # another prefix keeps its own budget
        assert (
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(other)))
            == grpc.StatusCode.UNAUTHENTICATED
        )


async def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(app_factory):
    app = await app_factory(trusted_proxies=["127.0.0.1"], credential_failures_limit="3/minute")
    wrong = {"authorization": "Bearer tc_wrong-key-0000000000000000000"}

    async def status(local_address, forwarded_for) -> int:
        async with http(app, local_address) as client:
            return (await client.get("/v1/auth/me", headers={**wrong, "x-forwarded-for": forwarded_for})).status_code

    # Through the proxy (127.0.0.1): the address it appended is the client's, each with its own budget.
    assert [await status(None, "198.51.100.7") for _ in range(4)] == [401, 401, 401, 429]
    assert await status(None, "198.51.100.8") == 401
    # A client that is no proxy claims any address it likes: counted as itself.
    assert [await status(ELSEWHERE, f"198.51.100.{i}") for i in range(20, 24)] == [401, 401, 401, 429]
    # gRPC through the trusted proxy (x-forwarded-for metadata) shares the HTTP budget of that client.
    channel, auth = await grpc_auth(app)
    async with channel:
        metadata = (*bearer("tc_wrong-key-0000000000000000000"), ("x-forwarded-for", "198.51.100.7"))
        assert (
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=metadata))
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )


async def test_the_openai_compatible_api_keeps_the_same_failure_budget(app_factory):
    app = await app_factory(credential_failures_limit="3/minute")
    async with http(app) as client:
        statuses = [
            (await client.get("/openai/v1/models", headers={"authorization": f"Bearer tc_wrong{i:030d}"})).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        assert (
            await client.get("/v1/auth/me", headers={"authorization": "Bearer tc_wrong-too-00000000000"})
        ).status_code == 429  # one budget for every surface
        assert (
            await client.get("/openai/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        ).status_code == 200


async def test_failed_logins_elsewhere_never_lock_out_the_right_password(app_factory):
    app = await app_factory(login_failures_limit="3/minute")
    channel, auth = await grpc_auth(app)
    async with channel, http(app, ELSEWHERE) as attacker, http(app) as owner:
        await create_user(auth, "alice")
        guesses = [
            (await attacker.post("/v1/auth:login", json={"username": "alice", "password": f"guess {i}!!"})).status_code
            for i in range(4)
        ]
        assert guesses == [401, 401, 401, 429]
        # The attacker is refused before the password is checked, even with the right one: nothing to learn.
        assert (
            await attacker.post("/v1/auth:login", json={"username": "alice", "password": PASSWORD})
        ).status_code == 429
        # Alice, elsewhere, gets in over gRPC and REST.
        assert (await auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))).access_token
        assert (await owner.post("/v1/auth:login", json={"username": "alice", "password": PASSWORD})).status_code == 200


async def test_password_spraying_from_one_address_is_throttled(app_factory):
    app = await app_factory(login_failures_limit="10/minute", login_failures_per_address_limit="4/minute")
    channel, auth = await grpc_auth(app)
    async with channel, http(app, ELSEWHERE) as sprayer:
        for name in ("bob", "carol"):
            await create_user(auth, name)
        tries = [
            (await sprayer.post("/v1/auth:login", json={"username": f"user{i}", "password": "Summer2026!"})).status_code
            for i in range(5)
        ]
        assert tries == [401] * 4 + [429]
        # Unknown and known usernames are refused alike: the budget does not reveal who exists.
        for name in ("bob", "nobody"):
            refused = await sprayer.post("/v1/auth:login", json={"username": name, "password": PASSWORD})
            assert refused.status_code == 429 and "retry in" in refused.json()["message"]
        assert (await auth.Login(auth_pb2.LoginRequest(username="carol", password=PASSWORD))).access_token


async def test_logins_answer_alike_for_unknown_users_wrong_passwords_and_disabled_accounts(app_factory):
    app = await app_factory()
    channel, auth = await grpc_auth(app)
    async with channel:
        await create_user(auth, "dora")
        disabled = await create_user(auth, "eve")
        await auth.UpdateUser(
            auth_pb2.UpdateUserRequest(
                user=auth_pb2.User(id=disabled.id, disabled=True), update_mask={"paths": ["disabled"]}
            ),
            metadata=bearer(ADMIN_KEY),
        )
        answers = set()
        for username, password in (("nobody", PASSWORD), ("dora", "wrong password"), ("eve", PASSWORD)):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await auth.Login(auth_pb2.LoginRequest(username=username, password=password))
            answers.add((failure.value.code(), failure.value.details(), reason(failure.value)))
    assert answers == {(grpc.StatusCode.UNAUTHENTICATED, "wrong username or password", "INVALID_CREDENTIALS")}


async def test_a_login_does_not_stall_other_calls(app_factory):
    """argon2 takes a fifth of a second or more: on the event loop, every login froze every other call and stream
    for that long. Measured on the loop itself (the server runs in this test's loop): the longest pause between
    the ticks of a 5 ms timer while a login runs is a small part of the login's time."""
    app = await app_factory()
    channel, auth = await grpc_auth(app)
    async with channel:
        await create_user(auth, "frank")
        for _ in range(3):  # the best of three tries: other processes may take the CPU for a while
            pauses = [0.0]

            async def tick() -> None:
                last = time.perf_counter()
                while True:
                    await asyncio.sleep(0.005)
                    now = time.perf_counter()
                    pauses.append(now - last)
                    last = now

            ticker = asyncio.ensure_future(tick())
            started = time.perf_counter()
            await auth.Login(auth_pb2.LoginRequest(username="frank", password=PASSWORD))
            login_seconds = time.perf_counter() - started
            ticker.cancel()
            if max(pauses) < login_seconds / 3:
                break
    assert max(pauses) < login_seconds / 3, (max(pauses), login_seconds)


# -- finding 4: sessions, password changes, token lifetime, signing keys ---------------------------------------------
async def login(auth, username: str, password: str = PASSWORD) -> auth_pb2.LoginResponse:
    return await auth.Login(auth_pb2.LoginRequest(username=username, password=password))


async def refresh(auth, token: str):
    return await auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=token))


async def test_reusing_a_refresh_token_revokes_its_whole_session(app_factory):
    app = await app_factory(refresh_token_reuse_grace_seconds=0)
    channel, auth = await grpc_auth(app)
    async with channel, http(app) as client:
        await create_user(auth, "gina")
        stolen = await login(auth, "gina")
        other_device = await login(auth, "gina")
        thief = await refresh(auth, stolen.refresh_token)  # the thief spends it first
        # The owner's client spends it again, over REST: reuse detected.
        reused = await client.post("/v1/auth:refresh", json={"refresh_token": stolen.refresh_token})
        assert reused.status_code == 401 and reused.json()["details"][0]["reason"] == "TOKEN_EXPIRED"
        assert "revoked" in reused.json()["message"]
        # Everything issued from that login is dead, the thief's tokens included ...
        assert await grpc_code(refresh(auth, thief.refresh_token)) == grpc.StatusCode.UNAUTHENTICATED
        for token in (thief.access_token, stolen.access_token):
            me = await client.get("/v1/auth/me", headers={"authorization": f"Bearer {token}"})
            assert me.status_code == 401 and me.json()["details"][0]["reason"] == "TOKEN_EXPIRED"
        # ... and another login of the same user is not.
        assert (
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(other_device.access_token)))
            == grpc.StatusCode.OK
        )
        assert (await refresh(auth, other_device.refresh_token)).access_token


@pytest.mark.parametrize("grace, wait, session_survives", [(5.0, 0.0, True), (1.0, 1.3, False)])
async def test_a_refresh_token_spent_twice_within_the_grace_keeps_its_session(
    app_factory, grace, wait, session_survives
):
    app = await app_factory(refresh_token_reuse_grace_seconds=grace)
    channel, auth = await grpc_auth(app)
    async with channel:
        await create_user(auth, "hank")
        first = await login(auth, "hank")
        winner = await refresh(auth, first.refresh_token)  # one browser tab
        await asyncio.sleep(wait)
        with pytest.raises(grpc.aio.AioRpcError) as loser:  # the other tab, racing it
            await refresh(auth, first.refresh_token)
        assert reason(loser.value) == "TOKEN_EXPIRED"
        survived = await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(winner.access_token)))
    assert (survived == grpc.StatusCode.OK) is session_survives


async def test_changing_ones_own_password_needs_the_current_one(app_factory):
    app = await app_factory()
    channel, auth = await grpc_auth(app)
    async with channel, http(app) as client:
        user = await create_user(auth, "ivan")
        token = (await login(auth, "ivan")).access_token

        def change(current: str | None):
            fields = {"id": user.id, "password": "a whole new password"}
            if current is not None:
                fields["current_password"] = current
            return auth.UpdateUser(
                auth_pb2.UpdateUserRequest(user=auth_pb2.User(**fields), update_mask={"paths": ["password"]}),
                metadata=bearer(token),
            )

        for current in (None, "not my password"):  # a stolen token alone cannot take the account over
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await change(current)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert failure.value.details().startswith("current_password")
        rest = await client.patch(
            f"/v1/users/{user.id}",
            headers={"authorization": f"Bearer {token}"},
            json={"password": "a whole new password", "current_password": "nope nope"},
        )
        assert rest.status_code == 400 and rest.json()["details"][0]["metadata"]["field"] == "current_password"
        assert (await login(auth, "ivan")).access_token  # unchanged so far

        rest = await client.patch(
            f"/v1/users/{user.id}",
            headers={"authorization": f"Bearer {token}"},
            json={"password": "a whole new password", "current_password": PASSWORD},
        )
        assert rest.status_code == 200, rest.text
        assert await grpc_code(login(auth, "ivan")) == grpc.StatusCode.UNAUTHENTICATED
        assert (await login(auth, "ivan", "a whole new password")).access_token


async def test_wrong_current_passwords_are_budgeted_like_logins(app_factory):
    app = await app_factory(login_failures_limit="3/minute")
    channel, auth = await grpc_auth(app)
    async with channel:
        user = await create_user(auth, "judy")
        token = (await login(auth, "judy")).access_token
        codes = []
        for current in ("guess 1!", "guess 2!", "guess 3!", PASSWORD):
            codes.append(
                await grpc_code(
                    auth.UpdateUser(
                        auth_pb2.UpdateUserRequest(
                            user=auth_pb2.User(id=user.id, password="brand new password", current_password=current),
                            update_mask={"paths": ["password"]},
                        ),
                        metadata=bearer(token),
                    )
                )
            )
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


@pytest.mark.parametrize("by_admin", [False, True])
async def test_a_password_change_ends_every_session_of_that_user(app_factory, by_admin):
    app = await app_factory()
    channel, auth = await grpc_auth(app)
    async with channel:
        user = await create_user(auth, "kim")
        await create_user(auth, "leo")
        sessions = [await login(auth, "kim") for _ in range(2)]
        theirs = await login(auth, "leo")
        change = auth_pb2.User(id=user.id, password="another good password")
        if not by_admin:
            change.current_password = PASSWORD
        await auth.UpdateUser(
            auth_pb2.UpdateUserRequest(user=change, update_mask={"paths": ["password"]}),
            metadata=bearer(ADMIN_KEY if by_admin else sessions[0].access_token),
        )
        for session in sessions:
            assert (
                await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(session.access_token)))
                == grpc.StatusCode.UNAUTHENTICATED
            )
            assert await grpc_code(refresh(auth, session.refresh_token)) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(theirs.access_token)))
            == grpc.StatusCode.OK
        )


async def test_a_token_living_longer_than_the_configured_lifetime_is_refused(app_factory, tmp_path):
    data_dir = tmp_path / "lifetime"
    app = await app_factory(data_dir=data_dir, access_token_ttl_seconds=3600)
    channel, auth = await grpc_auth(app)
    async with channel:
        await create_user(auth, "mia")
        long_lived = (await login(auth, "mia")).access_token  # signed correctly, for an hour
    await app.stop()
    app = await app_factory(data_dir=data_dir, access_token_ttl_seconds=900)
    channel, auth = await grpc_auth(app)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(long_lived))
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "invalid access token" in failure.value.details()
        fresh = (await login(auth, "mia")).access_token
        assert await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(fresh))) == grpc.StatusCode.OK


def rotate_signing_key(data_dir, *flags: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPECASE_")}
    done = subprocess.run(
        [sys.executable, "-m", "typecase.server", "rotate-signing-key", *flags],
        env={**env, "TYPECASE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_signing_key_rotation_keeps_old_tokens_until_the_previous_key_is_dropped(app_factory, tmp_path):
    import jwt

    data_dir = tmp_path / "rotation"
    app = await app_factory(data_dir=data_dir, signing_key_refresh_seconds=0.2)
    channel, auth = await grpc_auth(app)

    async def works(token: str) -> bool:
        return await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token))) == grpc.StatusCode.OK

    async with channel:
        await create_user(auth, "nina")
        before = (await login(auth, "nina")).access_token
        assert "now signing with key" in await asyncio.to_thread(rotate_signing_key, data_dir)
        await asyncio.sleep(0.3)
        after = (await login(auth, "nina")).access_token
        assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
        assert await works(before) and await works(after)  # the previous key verifies until its tokens expire

        await asyncio.to_thread(rotate_signing_key, data_dir)  # again: the key that signed `before` is gone
        await asyncio.sleep(0.3)
        assert not await works(before) and await works(after)

        await asyncio.to_thread(rotate_signing_key, data_dir, "--drop-previous")  # a leaked key: end them all
        await asyncio.sleep(0.3)
        assert not await works(after)
        assert await works((await login(auth, "nina")).access_token)


# -- finding 5: usernames -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, user",
    [
        ("user.username", {"username": "oscar\n"}),
        ("user.username", {"username": "oscar\r\n"}),
        ("user.email", {"username": "oscar", "email": "oscar@example.com\n"}),
    ],
)
async def test_a_trailing_newline_is_not_a_valid_username_or_email(app_factory, field, user):
    app = await app_factory()
    channel, auth = await grpc_auth(app)
    async with channel, http(app) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await auth.CreateUser(
                auth_pb2.CreateUserRequest(user=auth_pb2.User(password=PASSWORD, **user)), metadata=bearer(ADMIN_KEY)
            )
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and failure.value.details().startswith(field)
        rest = await client.post(
            "/v1/users", headers={"authorization": f"Bearer {ADMIN_KEY}"}, json={"password": PASSWORD, **user}
        )
        assert rest.status_code == 400 and rest.json()["details"][0]["metadata"]["field"] == field


async def test_usernames_are_unique_in_any_case_and_either_case_logs_in(app_factory):
    app = await app_factory()
    channel, auth = await grpc_auth(app)
    async with channel, http(app) as client:
        alice = await create_user(auth, "Alice")
        for name in ("alice", "ALICE"):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await create_user(auth, name)
            assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
        rest = await client.post(
            "/v1/users",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={"username": "aLiCe", "password": PASSWORD},
        )
        assert rest.status_code == 409
        for name in ("alice", "ALICE", " Alice "):
            assert (await login(auth, name)).user.id == alice.id
        assert (await client.post("/v1/auth:login", json={"username": "aliCE", "password": PASSWORD})).json()["user"][
            "username"
        ] == "Alice"


@pytest.mark.parametrize("max_entries, evicted", [(2, True), (100, False)])
async def test_the_credential_cache_holds_at_most_its_configured_entries(app_factory, max_entries, evicted):
    """Wrong keys are cached too: a stream of random ones must push entries out, not grow memory."""
    from sqlalchemy import update

    from typecase.server.auth.models import ApiKeyRow
    from typecase.server.infra.sql import utcnow

    app = await app_factory(api_key_cache_seconds=300, credential_cache_max_entries=max_entries)
    channel, auth = await grpc_auth(app)
    async with channel:
        key = await auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(api_key=auth_pb2.ApiKey(name="cached")), metadata=bearer(ADMIN_KEY)
        )
        assert await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(key.secret))) == grpc.StatusCode.OK
        async with app.resources.db.session() as session:  # revoked by another replica: this one has it cached
            await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key.api_key.id).values(revoke_time=utcnow()))
        assert await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(key.secret))) == grpc.StatusCode.OK
        for i in range(2):
            await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(f"tc_random{i:030d}")))
        after = await grpc_code(auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(key.secret)))
    assert after == (grpc.StatusCode.UNAUTHENTICATED if evicted else grpc.StatusCode.OK)
