"""Roles with permission sets, through the public API: the fixed permissions and built-in roles are listed; custom
roles are created, changed and deleted by holders of roles.manage (unknown permission: INVALID_ARGUMENT naming it;
built-ins untouchable); a role's permissions gate real calls (flows.create, audit.read, ...); nobody hands out what
they lack (no minting admins, no taking over an admin's account); a new role, or a changed custom role, applies on
the user's next call on another replica too (two Apps on PostgreSQL and Redis); every change is audited with
before/after."""

from __future__ import annotations

import grpc
import httpx
import pytest
import redis

from tests.conftest import ADMIN_KEY, REDIS_URL
from typecase.v1 import auth_pb2, auth_pb2_grpc, flow_pb2, flow_pb2_grpc, roles_pb2, roles_pb2_grpc

PASSWORD = "correct horse battery"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN_KEY}"}
ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
REDIS_DB = 14


def reason(reply: httpx.Response) -> str:
    return next(d["reason"] for d in reply.json()["details"] if d.get("@type", "").endswith("ErrorInfo"))


async def make_user(http: httpx.AsyncClient, name: str, role_name: str = "") -> dict[str, str]:
    body = {"username": name, "password": PASSWORD} | ({"role_name": role_name} if role_name else {})
    created = await http.post("/v1/users", json=body, headers=ADMIN_HEADERS)
    assert created.status_code == 200, created.text
    login = await http.post("/v1/auth:login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"authorization": f"Bearer {login.json()['access_token']}"}


async def audit(http: httpx.AsyncClient, action: str, resource_id: str) -> list[dict]:
    reply = await http.get(
        "/v1/admin/audit", params={"action": action, "resource_id": resource_id}, headers=ADMIN_HEADERS
    )
    assert reply.status_code == 200, reply.text
    return reply.json().get("events", [])


async def test_permissions_and_built_in_roles_are_listed_and_new_users_get_the_default_role(running_app):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}") as http:
        bob = await make_user(http, "bob")
        permissions = (await http.get("/v1/permissions", headers=bob)).json()["permissions"]
        names = [p["name"] for p in permissions]
        assert {"users.manage", "roles.manage", "models.manage", "flows.create", "audit.read"} <= set(names)
        roles = {r["name"]: r for r in (await http.get("/v1/roles", headers=bob)).json()["roles"]}
        assert list(roles)[:4] == ["admin", "group_admin", "builder", "user"]
        assert set(roles["admin"]["permissions"]) == set(names) and roles["admin"]["built_in"]
        assert "flows.create" in roles["builder"]["permissions"]
        assert roles["user"]["permissions"] == ["knowledge.create"]
        me = (await http.get("/v1/auth/me", headers=bob)).json()["user"]
        # Today's rights by default (TYPECASE_DEFAULT_USER_ROLE=builder), and the old enum still reads "user".
        assert me["role_name"] == "builder" and me["role"] == "USER_ROLE_USER"
        assert roles["builder"]["user_count"] >= 1


async def test_custom_roles_are_managed_by_roles_manage_and_gate_real_calls(running_app):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}") as http:
        bob = await make_user(http, "bob")  # a builder
        denied = await http.post("/v1/roles", json={"name": "auditor"}, headers=bob)
        assert denied.status_code == 403 and "roles.manage" in denied.json()["message"]

        unknown = await http.post(
            "/v1/roles", json={"name": "auditor", "permissions": ["audit.read", "fly"]}, headers=ADMIN_HEADERS
        )
        assert unknown.status_code == 400 and "'fly'" in unknown.json()["message"]
        assert "role.permissions" in unknown.json()["message"]
        created = await http.post(
            "/v1/roles",
            json={"name": "auditor", "description": "reads the audit log", "permissions": ["audit.read"]},
            headers=ADMIN_HEADERS,
        )
        assert created.status_code == 200, created.text
        assert created.json()["role"]["permissions"] == ["audit.read"] and not created.json()["role"].get("built_in")
        taken = await http.post("/v1/roles", json={"name": "auditor"}, headers=ADMIN_HEADERS)
        assert taken.status_code == 409

        for built_in in ("admin", "user"):
            changed = await http.patch(f"/v1/roles/{built_in}", json={"permissions": []}, headers=ADMIN_HEADERS)
            assert changed.status_code == 400 and reason(changed) == "ROLE_BUILT_IN"
            deleted = await http.delete(f"/v1/roles/{built_in}", headers=ADMIN_HEADERS)
            assert deleted.status_code == 400 and reason(deleted) == "ROLE_BUILT_IN"
        missing = await http.get("/v1/roles/nobody", headers=bob)
        assert missing.status_code == 404 and reason(missing) == "ROLE_NOT_FOUND"

        # bob, a builder, may create flows but not read the audit log; as an auditor the other way round.
        assert (await http.get("/v1/admin/audit", headers=bob)).status_code == 403
        bob_id = (await http.get("/v1/auth/me", headers=bob)).json()["user"]["id"]
        assigned = await http.patch(f"/v1/users/{bob_id}", json={"role_name": "auditor"}, headers=ADMIN_HEADERS)
        assert assigned.status_code == 200 and assigned.json()["user"]["role_name"] == "auditor"
        assert (await http.get("/v1/admin/audit", headers=bob)).status_code == 200
        flow = await http.post("/v1/flows", json={"name": "f"}, headers=bob)
        assert flow.status_code == 403 and "flows.create" in flow.json()["message"]
        no_such = await http.patch(f"/v1/users/{bob_id}", json={"role_name": "ghost"}, headers=ADMIN_HEADERS)
        assert no_such.status_code == 400 and reason(no_such) == "ROLE_NOT_FOUND"
        assert "user.role_name" in no_such.json()["message"]

        # A held role cannot be deleted; once nobody holds it, it can.
        in_use = await http.delete("/v1/roles/auditor", headers=ADMIN_HEADERS)
        assert in_use.status_code == 400 and reason(in_use) == "ROLE_IN_USE"
        widened = await http.patch(
            "/v1/roles/auditor", json={"permissions": ["audit.read", "flows.create"]}, headers=ADMIN_HEADERS
        )
        assert widened.status_code == 200 and widened.json()["role"]["user_count"] == 1
        assert (await http.post("/v1/flows", json={"name": "f"}, headers=bob)).status_code == 200
        await http.patch(f"/v1/users/{bob_id}", json={"role_name": "user"}, headers=ADMIN_HEADERS)
        assert (await http.delete("/v1/roles/auditor", headers=ADMIN_HEADERS)).status_code == 200

        # The built-in "user" chats and keeps its own knowledge bases, but builds nothing for others.
        assert (await http.post("/v1/knowledge-bases", json={"name": "mine"}, headers=bob)).status_code == 200
        assert (await http.post("/v1/flows", json={"name": "f"}, headers=bob)).status_code == 403

        (create,) = await audit(http, "role.create", "auditor")
        assert create["detail"]["after"]["permissions"] == ["audit.read"] and create["actor_id"]
        (update,) = await audit(http, "role.update", "auditor")
        assert update["detail"]["before"]["permissions"] == ["audit.read"]
        assert update["detail"]["after"]["permissions"] == ["flows.create", "audit.read"]
        (delete,) = await audit(http, "role.delete", "auditor")
        assert delete["detail"]["before"]["permissions"] == ["flows.create", "audit.read"]
        assignments = [e["detail"] for e in await audit(http, "user.update", bob_id) if "before" in e["detail"]]
        assert [(d["before"]["role"], d["after"]["role"]) for d in assignments] == [
            ("auditor", "user"),
            ("builder", "auditor"),
        ]


async def test_nobody_hands_out_more_than_they_hold(running_app):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}") as http:
        created = await http.post(
            "/v1/roles",
            json={
                "name": "people-ops",
                "permissions": ["users.manage", "users.read", "roles.manage", "knowledge.create"],
            },
            headers=ADMIN_HEADERS,
        )
        assert created.status_code == 200, created.text
        hr = await make_user(http, "hazel", "people-ops")
        other_admin = await http.post(
            "/v1/users", json={"username": "root2", "password": PASSWORD, "role_name": "admin"}, headers=ADMIN_HEADERS
        )
        admin_id = other_admin.json()["user"]["id"]

        # May manage users of lesser roles ...
        carol = await http.post(
            "/v1/users", json={"username": "carol", "password": PASSWORD, "role_name": "user"}, headers=hr
        )
        assert carol.status_code == 200, carol.text
        # ... but not mint an admin or a builder (flows.create is not theirs), nor a role wider than theirs,
        for role in ("admin", "builder"):
            minted = await http.post(
                "/v1/users", json={"username": f"x-{role}", "password": PASSWORD, "role_name": role}, headers=hr
            )
            assert minted.status_code == 403, minted.text
        wider = await http.post("/v1/roles", json={"name": "modeller", "permissions": ["models.manage"]}, headers=hr)
        assert wider.status_code == 403 and "models.manage" in wider.json()["message"]
        # nor take over an admin's account by resetting its password, nor delete it.
        reset = await http.patch(f"/v1/users/{admin_id}", json={"password": "an entirely new one"}, headers=hr)
        assert reset.status_code == 403
        assert (await http.delete(f"/v1/users/{admin_id}", headers=hr)).status_code == 403
        # A user cannot change their own role.
        hr_id = (await http.get("/v1/auth/me", headers=hr)).json()["user"]["id"]
        own = await http.patch(f"/v1/users/{hr_id}", json={"role_name": "user"}, headers=hr)
        assert own.status_code == 400


async def test_a_new_role_applies_on_the_next_call_on_another_replica(app_factory, pg_database_url, tmp_path):
    redis_url = f"{REDIS_URL}/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    shared = {"database_url": pg_database_url, "redis_url": redis_url}
    one = await app_factory(**shared, data_dir=tmp_path / "one")
    two = await app_factory(**shared, data_dir=tmp_path / "two")
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{one.grpc_port}") as c1,
            grpc.aio.insecure_channel(f"127.0.0.1:{two.grpc_port}") as c2,
        ):
            auth1, roles1 = auth_pb2_grpc.AuthServiceStub(c1), roles_pb2_grpc.RoleServiceStub(c1)
            flows2 = flow_pb2_grpc.FlowServiceStub(c2)
            bob = (
                await auth1.CreateUser(
                    auth_pb2.CreateUserRequest(user=auth_pb2.User(username="bob", password=PASSWORD)), metadata=ADMIN
                )
            ).user
            token = (await auth1.Login(auth_pb2.LoginRequest(username="bob", password=PASSWORD))).access_token
            bob_md = (("authorization", f"Bearer {token}"),)

            made = iter(range(100))

            async def create_flow() -> grpc.StatusCode:
                name = f"flow {next(made)}"  # flow names are unique per owner
                try:
                    await flows2.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name)), metadata=bob_md)
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            for _ in range(3):  # bob's access is now cached on the shared cache, through replica two
                assert await create_flow() == grpc.StatusCode.OK
            await auth1.UpdateUser(
                auth_pb2.UpdateUserRequest(user=auth_pb2.User(id=bob.id, role_name="user")), metadata=ADMIN
            )
            assert await create_flow() == grpc.StatusCode.PERMISSION_DENIED

            # A custom role widened on replica one opens on replica two at once.
            await roles1.CreateRole(roles_pb2.CreateRoleRequest(role=roles_pb2.Role(name="drafter")), metadata=ADMIN)
            await auth1.UpdateUser(
                auth_pb2.UpdateUserRequest(user=auth_pb2.User(id=bob.id, role_name="drafter")), metadata=ADMIN
            )
            assert await create_flow() == grpc.StatusCode.PERMISSION_DENIED
            await roles1.UpdateRole(
                roles_pb2.UpdateRoleRequest(role=roles_pb2.Role(name="drafter", permissions=["flows.create"])),
                metadata=ADMIN,
            )
            assert await create_flow() == grpc.StatusCode.OK
    finally:
        redis.Redis.from_url(redis_url).flushdb()


@pytest.mark.parametrize("role", ["admin", "builder"])
async def test_the_old_role_enum_still_assigns(running_app, role):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}") as http:
        enum = "USER_ROLE_ADMIN" if role == "admin" else "USER_ROLE_USER"
        created = await http.post(
            "/v1/users", json={"username": "dora", "password": PASSWORD, "role": enum}, headers=ADMIN_HEADERS
        )
        assert created.json()["user"]["role_name"] == role and created.json()["user"]["role"] == enum


async def test_looking_users_up_is_not_acting_as_them(running_app):
    """group_admin holds users.read: it sees other users, but cannot make an API key for one (an admin's above all)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}") as http:
        lead = await make_user(http, "lead", "group_admin")
        users = (await http.get("/v1/users", headers=lead)).json()["users"]
        admin_id = next(u["id"] for u in users if u["role_name"] == "admin")
        assert (await http.get(f"/v1/users/{admin_id}", headers=lead)).status_code == 200
        key = await http.post("/v1/api-keys", json={"name": "mine now", "owner_id": admin_id}, headers=lead)
        assert key.status_code == 404
        changed = await http.patch(f"/v1/users/{admin_id}", json={"display_name": "pwned"}, headers=lead)
        assert changed.status_code == 403
