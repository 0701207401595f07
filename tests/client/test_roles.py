"""Roles through the SDK, blocking and asyncio: an admin lists the permissions, makes a custom role, gives it to a
user, who then holds exactly its permissions; the role is changed and, once nobody holds it, deleted. A user
without roles.manage is refused."""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN_KEY
from typecase.client import AsyncClient, Client
from typecase.client.errors import NotFound, PermissionDenied

PASSWORD = "correct horse battery"


def test_a_custom_role_is_made_assigned_changed_and_deleted(client, hosted):
    permissions = {p.name: p.description for p in client.roles.list_permissions()}
    assert {"roles.manage", "knowledge.create", "flows.create"} <= set(permissions)
    assert all(permissions.values()), "every permission is described"
    built_in = {r.name: r for r in client.roles.list() if r.built_in}
    assert set(built_in) == {"admin", "group_admin", "builder", "user"}

    role = client.roles.create("sdk-curators", ["knowledge.create", "flows.create"], description="curate")
    assert (role.name, set(role.permissions), role.built_in) == (
        "sdk-curators",
        {"knowledge.create", "flows.create"},
        False,
    )
    curator = client.auth.create_user("sdk-curator", PASSWORD)
    assigned = client.roles.assign(curator.id, "sdk-curators")
    assert assigned.role_name == "sdk-curators"
    assert client.roles.get("sdk-curators").user_count == 1
    with Client(hosted.target) as as_curator:
        as_curator.auth.login("sdk-curator", PASSWORD)
        mine = as_curator.auth.me().user.role_name
        assert mine == "sdk-curators"
        assert set(as_curator.roles.get(mine).permissions) == {"knowledge.create", "flows.create"}
        with pytest.raises(PermissionDenied):
            as_curator.roles.create("sdk-self-made", ["roles.manage"])

    changed = client.roles.update("sdk-curators", permissions=["knowledge.create"], description="curate bases")
    assert (list(changed.permissions), changed.description) == (["knowledge.create"], "curate bases")
    with pytest.raises(ValueError):
        client.roles.update("sdk-curators")

    client.roles.assign(curator.id, "user")
    client.roles.delete("sdk-curators")
    with pytest.raises(NotFound):
        client.roles.get("sdk-curators")
    assert "sdk-curators" not in [r.name for r in client.roles.list()]


async def test_the_async_client_manages_roles_too(hosted):
    async with AsyncClient(hosted.target, api_key=ADMIN_KEY) as client:
        assert "audit.read" in [p.name for p in await client.roles.list_permissions()]
        role = await client.roles.create("sdk-async-auditors", ["audit.read"])
        assert role.name in [r.name for r in await client.roles.list()]
        user = await client.auth.create_user("sdk-async-auditor", PASSWORD)
        assert (await client.roles.assign(user.id, role.name)).role_name == role.name
        updated = await client.roles.update(role.name, description="reads the audit log")
        assert (updated.description, list(updated.permissions)) == ("reads the audit log", ["audit.read"])
        assert (await client.roles.get(role.name)).user_count == 1
        await client.roles.assign(user.id, "user")
        await client.roles.delete(role.name)
        with pytest.raises(NotFound):
            await client.roles.get(role.name)
