"""Groups and sharing: alice shares a knowledge base with group research; bob (a member) finds and searches it,
carol (not a member) gets NOT_FOUND on gRPC and REST; levels hold (use cannot edit, only the owner deletes or
re-shares); removing bob from the group closes it on his next call, on another replica too (two Apps sharing
PostgreSQL and Redis); every change is in the audit log with actor, target and before/after."""

from __future__ import annotations

import grpc
import httpx
import pytest
import redis
from google.protobuf.json_format import MessageToDict

from tests.conftest import ADMIN_KEY, REDIS_URL
from tests.knowledge.support import wait_done
from typecase.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    groups_pb2,
    groups_pb2_grpc,
    knowledge_pb2_grpc,
)
from typecase.v1 import knowledge_pb2 as kpb

PASSWORD = "correct horse battery"
ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)
REDIS_DB = 12


class World:
    """Stubs on one App, and alice, bob and carol (with their metadata and ids)."""

    def __init__(self, channel):
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.groups = groups_pb2_grpc.GroupServiceStub(channel)
        self.kb = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.md: dict[str, tuple] = {}
        self.ids: dict[str, str] = {}

    async def users(self, *names: str) -> None:
        for name in names:
            user = (
                await self.auth.CreateUser(
                    auth_pb2.CreateUserRequest(user=auth_pb2.User(username=name, password=PASSWORD)), metadata=ADMIN
                )
            ).user
            self.ids[name] = user.id
            await self.login(name)

    async def login(self, name: str) -> None:
        token = (await self.auth.Login(auth_pb2.LoginRequest(username=name, password=PASSWORD))).access_token
        self.md[name] = (("authorization", f"Bearer {token}"),)


async def shared_kb(w: World) -> tuple[str, str]:
    """alice's base with one searchable file, shared with group research (bob a member) at level use."""
    kb = (
        await w.kb.CreateKnowledgeBase(
            kpb.CreateKnowledgeBaseRequest(knowledge_base=kpb.KnowledgeBase(name="lab notes")), metadata=w.md["alice"]
        )
    ).knowledge_base
    file = (
        await w.kb.AddTextFile(
            kpb.AddTextFileRequest(kb_id=kb.id, name="notes.txt", text="the centrifuge runs at 4711 rpm"),
            metadata=w.md["alice"],
        )
    ).file
    assert (await wait_done(w.kb, w.md["alice"], file.id)).status == kpb.FILE_STATUS_DONE
    group = (
        await w.groups.CreateGroup(
            groups_pb2.CreateGroupRequest(group=groups_pb2.Group(name="research")), metadata=ADMIN
        )
    ).group
    await w.groups.AddGroupMember(
        groups_pb2.AddGroupMemberRequest(group_id=group.id, member=groups_pb2.GroupMember(user_id=w.ids["bob"])),
        metadata=ADMIN,
    )
    await w.groups.CreateGrant(
        groups_pb2.CreateGrantRequest(
            grant=groups_pb2.Grant(
                resource_type="knowledge_base",
                resource_id=kb.id,
                grantee_type=groups_pb2.GRANTEE_TYPE_GROUP,
                grantee_id=group.id,
                level=groups_pb2.SHARE_LEVEL_USE,
            )
        ),
        metadata=w.md["alice"],
    )
    return kb.id, group.id


async def search(w: World, who: str, kb_id: str) -> list[str]:
    reply = await w.kb.Search(
        kpb.SearchRequest(kb_ids=[kb_id], query="centrifuge", mode=kpb.SEARCH_MODE_KEYWORD), metadata=w.md[who]
    )
    return [hit.text for hit in reply.hits]


async def listed(w: World, who: str) -> list[str]:
    return [
        kb.id
        for kb in (await w.kb.ListKnowledgeBases(kpb.ListKnowledgeBasesRequest(), metadata=w.md[who])).knowledge_bases
    ]


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value.code()


async def test_a_base_shared_with_a_group_opens_to_members_at_its_level_and_to_nobody_else(running_app):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_app.grpc_port}") as channel:
        w = World(channel)
        await w.users("alice", "bob", "carol")
        kb_id, group_id = await shared_kb(w)

        assert kb_id in await listed(w, "bob")
        assert any("4711" in text for text in await search(w, "bob", kb_id))
        got = await w.kb.GetKnowledgeBase(kpb.GetKnowledgeBaseRequest(kb_id=kb_id), metadata=w.md["bob"])
        assert got.knowledge_base.owner_id == w.ids["alice"]

        # carol: not a member, so the base does not exist for her, on gRPC and REST alike.
        assert kb_id not in await listed(w, "carol")
        assert await code_of(search(w, "carol", kb_id)) == grpc.StatusCode.NOT_FOUND
        assert (
            await code_of(w.kb.GetKnowledgeBase(kpb.GetKnowledgeBaseRequest(kb_id=kb_id), metadata=w.md["carol"]))
            == grpc.StatusCode.NOT_FOUND
        )
        assert (
            await code_of(w.groups.GetGroup(groups_pb2.GetGroupRequest(group_id=group_id), metadata=w.md["carol"]))
            == grpc.StatusCode.NOT_FOUND
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running_app.http_port}") as http:
            carol = {"authorization": w.md["carol"][0][1]}
            bob = {"authorization": w.md["bob"][0][1]}
            assert (await http.get(f"/v1/knowledge-bases/{kb_id}", headers=carol)).status_code == 404
            body = {"kb_ids": [kb_id], "query": "centrifuge", "mode": "SEARCH_MODE_KEYWORD"}
            assert (await http.post("/v1/knowledge-bases:search", json=body, headers=carol)).status_code == 404
            assert (await http.post("/v1/knowledge-bases:search", json=body, headers=bob)).status_code == 200
            mine = (await http.get("/v1/groups", headers=bob)).json()["groups"]
            assert [g["name"] for g in mine] == ["research"]
            assert (await http.get("/v1/groups", headers=carol)).json()["groups"] == []

        # Level "use": bob reads but may not change, delete or re-share it; he is told why (it is visible to him).
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await w.kb.UpdateKnowledgeBase(
                kpb.UpdateKnowledgeBaseRequest(knowledge_base=kpb.KnowledgeBase(id=kb_id, name="mine now")),
                metadata=w.md["bob"],
            )
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "SHARE_LEVEL_INSUFFICIENT" in str(failure.value.trailing_metadata())
        assert (
            await code_of(
                w.kb.AddTextFile(kpb.AddTextFileRequest(kb_id=kb_id, name="x.txt", text="x"), metadata=w.md["bob"])
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            await code_of(w.kb.DeleteKnowledgeBase(kpb.DeleteKnowledgeBaseRequest(kb_id=kb_id), metadata=w.md["bob"]))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        reshare = groups_pb2.Grant(
            resource_type="knowledge_base",
            resource_id=kb_id,
            grantee_type=groups_pb2.GRANTEE_TYPE_USER,
            grantee_id=w.ids["carol"],
        )
        assert (
            await code_of(w.groups.CreateGrant(groups_pb2.CreateGrantRequest(grant=reshare), metadata=w.md["bob"]))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            await code_of(w.groups.CreateGrant(groups_pb2.CreateGrantRequest(grant=reshare), metadata=w.md["carol"]))
            == grpc.StatusCode.NOT_FOUND
        )
        # Only an admin or a group admin manages members: bob, a plain member, cannot add carol.
        assert (
            await code_of(
                w.groups.AddGroupMember(
                    groups_pb2.AddGroupMemberRequest(
                        group_id=group_id, member=groups_pb2.GroupMember(user_id=w.ids["carol"])
                    ),
                    metadata=w.md["bob"],
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )

        # Raising the group's grant to "edit" lets bob add a file, still not delete the base.
        grants = (
            await w.groups.ListGrants(
                groups_pb2.ListGrantsRequest(resource_type="knowledge_base", resource_id=kb_id), metadata=w.md["alice"]
            )
        ).grants
        assert [(g.grantee_id, g.level) for g in grants] == [(group_id, groups_pb2.SHARE_LEVEL_USE)]
        await w.groups.UpdateGrant(
            groups_pb2.UpdateGrantRequest(grant=groups_pb2.Grant(id=grants[0].id, level=groups_pb2.SHARE_LEVEL_EDIT)),
            metadata=w.md["alice"],
        )
        await w.kb.AddTextFile(
            kpb.AddTextFileRequest(kb_id=kb_id, name="bob.txt", text="bob was here"), metadata=w.md["bob"]
        )
        assert (
            await code_of(w.kb.DeleteKnowledgeBase(kpb.DeleteKnowledgeBaseRequest(kb_id=kb_id), metadata=w.md["bob"]))
            == grpc.StatusCode.PERMISSION_DENIED
        )

        # Out of the group, out of the base: the very next call.
        await w.groups.RemoveGroupMember(
            groups_pb2.RemoveGroupMemberRequest(group_id=group_id, user_id=w.ids["bob"]), metadata=ADMIN
        )
        assert await code_of(search(w, "bob", kb_id)) == grpc.StatusCode.NOT_FOUND
        assert kb_id not in await listed(w, "bob")

        # Deleting the base withdraws its grants with it.
        await w.kb.DeleteKnowledgeBase(kpb.DeleteKnowledgeBaseRequest(kb_id=kb_id), metadata=w.md["alice"])
        left = (
            await w.groups.ListGrants(groups_pb2.ListGrantsRequest(resource_type="knowledge_base"), metadata=ADMIN)
        ).grants
        assert kb_id not in [g.resource_id for g in left]

        # The audit log names actor, target and before/after of each change.
        events = (await w.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest(page_size=100), metadata=ADMIN)).events
        by_action = {}
        for event in events:
            by_action.setdefault(event.action, []).append(event)
        assert by_action["group.create"][0].resource_id == group_id
        removed = by_action["group.member.remove"][0]
        assert removed.actor_id != w.ids["bob"] and removed.resource_id == group_id
        assert MessageToDict(removed.detail)["user_id"] == w.ids["bob"]
        updated = by_action["grant.update"][0]
        assert updated.actor_id == w.ids["alice"] and updated.resource_id == kb_id
        assert MessageToDict(updated.detail)["before"]["level"] == "use"
        assert MessageToDict(updated.detail)["after"]["level"] == "edit"


async def test_leaving_a_group_takes_effect_on_the_next_call_on_another_replica(app_factory, pg_database_url, tmp_path):
    redis_url = f"{REDIS_URL}/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    shared = {"database_url": pg_database_url, "redis_url": redis_url}
    one = await app_factory(**shared, data_dir=tmp_path / "one")
    # Each keeps files in its own data dir: ingestion jobs (shared through Redis) run on replica one only.
    two = await app_factory(**shared, data_dir=tmp_path / "two", knowledge_worker_in_process=False)
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{one.grpc_port}") as c1,
            grpc.aio.insecure_channel(f"127.0.0.1:{two.grpc_port}") as c2,
        ):
            w1, w2 = World(c1), World(c2)
            await w1.users("alice", "bob", "carol")
            w2.md, w2.ids = w1.md, w1.ids
            kb_id, group_id = await shared_kb(w1)
            for _ in range(3):  # bob's groups are now cached on the shared cache, through replica two
                assert any("4711" in text for text in await search(w2, "bob", kb_id))
            assert await code_of(search(w2, "carol", kb_id)) == grpc.StatusCode.NOT_FOUND

            await w1.groups.RemoveGroupMember(
                groups_pb2.RemoveGroupMemberRequest(group_id=group_id, user_id=w1.ids["bob"]), metadata=ADMIN
            )
            assert await code_of(search(w2, "bob", kb_id)) == grpc.StatusCode.NOT_FOUND
            assert kb_id not in await listed(w2, "bob")

            # And back in through replica two: replica one sees it at once.
            await w2.groups.AddGroupMember(
                groups_pb2.AddGroupMemberRequest(
                    group_id=group_id, member=groups_pb2.GroupMember(user_id=w1.ids["bob"])
                ),
                metadata=ADMIN,
            )
            assert kb_id in await listed(w1, "bob")
    finally:
        redis.Redis.from_url(redis_url).flushdb()


async def test_deleting_a_group_removes_its_members_and_closes_what_it_shared(running_app):
    from sqlalchemy import func, select

    from typecase.server.auth.models import GroupMemberRow

    async with grpc.aio.insecure_channel(f"127.0.0.1:{running_app.grpc_port}") as channel:
        w = World(channel)
        await w.users("alice", "bob")
        kb_id, group_id = await shared_kb(w)
        assert kb_id in await listed(w, "bob")

        await w.groups.DeleteGroup(groups_pb2.DeleteGroupRequest(group_id=group_id), metadata=ADMIN)

        assert kb_id not in await listed(w, "bob")
        assert await code_of(search(w, "bob", kb_id)) == grpc.StatusCode.NOT_FOUND
        get = w.groups.GetGroup(groups_pb2.GetGroupRequest(group_id=group_id), metadata=ADMIN)
        assert await code_of(get) == grpc.StatusCode.NOT_FOUND
    async with running_app.resources.db.session() as session:
        members = select(func.count()).select_from(GroupMemberRow).where(GroupMemberRow.group_id == group_id)
        assert await session.scalar(members) == 0
