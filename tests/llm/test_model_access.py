"""Model access (issue 25): alice (an admin) restricts a model and grants it to group research; bob (a member)
lists and generates with it; carol (not a member) is told it does not exist on gRPC, REST and /openai/v1 and does
not see it in lists; removing bob from the group closes it on his next call; an open model stays usable by all.
Grants on models are admins' and at level use only."""

from __future__ import annotations

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from tests.llm.conftest import ADMIN, user
from typecase.v1 import auth_pb2, auth_pb2_grpc, groups_pb2, groups_pb2_grpc, llm_pb2

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    return request.getfixturevalue("pg_database_url") if request.param == "postgresql" else None


@pytest.fixture
async def app(make_app, database_url):
    """The App on SQLite and on PostgreSQL (the list filter and the grant lookup are SQL)."""
    return await make_app(database_url=database_url)


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value.code()


async def people(channel) -> dict[str, tuple]:
    """alice (admin), bob and carol (users): name -> gRPC metadata with their session token."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    md = {}
    for name, role in (("alice", auth_pb2.USER_ROLE_ADMIN), ("bob", None), ("carol", None)):
        created = await auth.CreateUser(
            auth_pb2.CreateUserRequest(user=auth_pb2.User(username=name, password=PASSWORD, role=role)),
            metadata=ADMIN,
        )
        token = (await auth.Login(auth_pb2.LoginRequest(username=name, password=PASSWORD))).access_token
        md[name] = (("authorization", f"Bearer {token}"),)
        md[name + "_id"] = created.user.id
    return md


async def test_a_restricted_model_serves_admins_and_grantees_only(app, llm, upstream):
    open_model = await llm.fake_model(upstream, name="open-fake")
    secret = await llm.fake_model(upstream, name="secret-fake")
    assert secret.access == llm_pb2.MODEL_ACCESS_EVERYONE  # the default: today's behaviour

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        md = await people(channel)
        stub, groups = llm.stub, groups_pb2_grpc.GroupServiceStub(channel)

        async def generate(who: str, model_id: str) -> str:
            call = stub.Generate(llm_pb2.GenerateRequest(model_id=model_id, messages=[user("hi")]), metadata=md[who])
            return "".join([m.text async for m in call])

        async def listed(who: str) -> set[str]:
            return {m.name for m in (await stub.ListModels(llm_pb2.ListModelsRequest(), metadata=md[who])).models}

        restrict = llm_pb2.UpdateModelRequest(
            model=llm_pb2.Model(id=secret.id, access=llm_pb2.MODEL_ACCESS_RESTRICTED),
            update_mask=field_mask_pb2.FieldMask(paths=["access"]),
        )
        assert await code_of(stub.UpdateModel(restrict, metadata=md["bob"])) == grpc.StatusCode.PERMISSION_DENIED
        updated = (await stub.UpdateModel(restrict, metadata=md["alice"])).model
        assert updated.access == llm_pb2.MODEL_ACCESS_RESTRICTED

        group = (
            await groups.CreateGroup(
                groups_pb2.CreateGroupRequest(group=groups_pb2.Group(name="research")), metadata=md["alice"]
            )
        ).group
        await groups.AddGroupMember(
            groups_pb2.AddGroupMemberRequest(group_id=group.id, member=groups_pb2.GroupMember(user_id=md["bob_id"])),
            metadata=md["alice"],
        )

        def grant(level=groups_pb2.SHARE_LEVEL_USE, grantee=group.id, kind=groups_pb2.GRANTEE_TYPE_GROUP):
            return groups_pb2.CreateGrantRequest(
                grant=groups_pb2.Grant(
                    resource_type="model", resource_id=secret.id, grantee_type=kind, grantee_id=grantee, level=level
                )
            )

        # Before any grant nobody but admins may use it; carol cannot grant it to herself (it does not exist for her).
        assert await code_of(generate("bob", secret.id)) == grpc.StatusCode.NOT_FOUND
        own = grant(grantee=md["carol_id"], kind=groups_pb2.GRANTEE_TYPE_USER)
        assert await code_of(groups.CreateGrant(own, metadata=md["carol"])) == grpc.StatusCode.NOT_FOUND
        # Edit level means nothing on a model: refused, naming the field.
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await groups.CreateGrant(grant(level=groups_pb2.SHARE_LEVEL_EDIT), metadata=md["alice"])
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "grant.level" in failure.value.details()
        await groups.CreateGrant(grant(), metadata=md["alice"])

        # bob, through research: lists, gets and generates.
        assert {"open-fake", "secret-fake"} <= await listed("bob")
        assert (await stub.GetModel(llm_pb2.GetModelRequest(model_id=secret.id), metadata=md["bob"])).model.name
        assert await generate("bob", secret.id) == "tok0 tok1 tok2 tok3 tok4 "
        # ...but may not share it on (only admins grant on models).
        assert await code_of(groups.CreateGrant(own, metadata=md["bob"])) == grpc.StatusCode.PERMISSION_DENIED

        # carol: the model does not exist for her, by id or by name; the open one still serves her.
        assert "secret-fake" not in await listed("carol") and "open-fake" in await listed("carol")
        get = llm_pb2.GetModelRequest(model_id=secret.id)
        assert await code_of(stub.GetModel(get, metadata=md["carol"])) == grpc.StatusCode.NOT_FOUND
        assert await code_of(generate("carol", secret.id)) == grpc.StatusCode.NOT_FOUND
        assert await code_of(generate("carol", "secret-fake")) == grpc.StatusCode.NOT_FOUND
        assert await generate("carol", open_model.id) == "tok0 tok1 tok2 tok3 tok4 "
        complete = llm_pb2.CompleteRequest(model_id=secret.id, messages=[user("hi")])
        assert await code_of(stub.Complete(complete, metadata=md["carol"])) == grpc.StatusCode.NOT_FOUND
        assert "secret-fake" in await listed("alice")  # admins see and use every model
        assert await generate("alice", secret.id) == "tok0 tok1 tok2 tok3 tok4 "

        headers = {who: {"authorization": md[who][0][1]} for who in ("bob", "carol")}
        chat = {"model": "secret-fake", "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
            body = {"messages": [{"role": "MESSAGE_ROLE_USER", "content": "hi"}]}
            assert (
                await http.post(f"/v1/models/{secret.id}:generate", json=body, headers=headers["carol"])
            ).status_code == 404
            assert (await http.get(f"/v1/models/{secret.id}", headers=headers["carol"])).status_code == 404
            refused = await http.post("/openai/v1/chat/completions", json=chat, headers=headers["carol"])
            assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
            assert (
                await http.post("/openai/v1/chat/completions", json={**chat, "stream": True}, headers=headers["carol"])
            ).status_code == 404
            assert (await http.get("/openai/v1/models/secret-fake", headers=headers["carol"])).status_code == 404
            names = {m["id"] for m in (await http.get("/openai/v1/models", headers=headers["carol"])).json()["data"]}
            assert "secret-fake" not in names and "open-fake" in names
            names = {m["id"] for m in (await http.get("/openai/v1/models", headers=headers["bob"])).json()["data"]}
            assert "secret-fake" in names
            served = await http.post("/openai/v1/chat/completions", json=chat, headers=headers["bob"])
            assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"]

            # Out of research: closed on bob's next call, everywhere.
            await groups.RemoveGroupMember(
                groups_pb2.RemoveGroupMemberRequest(group_id=group.id, user_id=md["bob_id"]), metadata=md["alice"]
            )
            assert await code_of(generate("bob", secret.id)) == grpc.StatusCode.NOT_FOUND
            assert "secret-fake" not in await listed("bob")
            assert (
                await http.post("/openai/v1/chat/completions", json=chat, headers=headers["bob"])
            ).status_code == 404

            # Opened again (over REST): everyone uses it.
            alice = {"authorization": md["alice"][0][1]}
            opened = await http.patch(
                f"/v1/models/{secret.id}?update_mask=access", json={"access": "MODEL_ACCESS_EVERYONE"}, headers=alice
            )
            assert opened.status_code == 200 and opened.json()["model"]["access"] == "MODEL_ACCESS_EVERYONE"
        assert await generate("carol", secret.id) == "tok0 tok1 tok2 tok3 tok4 "


async def test_a_restricted_default_model_resolves_only_for_callers_who_may_use_it(app, llm, upstream):
    secret = await llm.fake_model(upstream, name="secret-default", access=llm_pb2.MODEL_ACCESS_RESTRICTED)
    assert secret.access == llm_pb2.MODEL_ACCESS_RESTRICTED
    await llm.stub.UpdateDefaults(
        llm_pb2.UpdateDefaultsRequest(
            defaults=llm_pb2.LLMDefaults(chat_model_id=secret.id),
            update_mask=field_mask_pb2.FieldMask(paths=["chat_model_id"]),
        ),
        metadata=ADMIN,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        md = await people(channel)
        request = llm_pb2.GenerateRequest(messages=[user("hi")])  # no model: the default chat model
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            [m async for m in llm.stub.Generate(request, metadata=md["carol"])]
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert [m.text async for m in llm.stub.Generate(request, metadata=md["alice"])]
        # Deleting the model drops its grants with it.
        await groups_pb2_grpc.GroupServiceStub(channel).CreateGrant(
            groups_pb2.CreateGrantRequest(
                grant=groups_pb2.Grant(
                    resource_type="model",
                    resource_id=secret.id,
                    grantee_type=groups_pb2.GRANTEE_TYPE_USER,
                    grantee_id=md["carol_id"],
                )
            ),
            metadata=md["alice"],
        )
        assert [m.text async for m in llm.stub.Generate(request, metadata=md["carol"])]
        model_grants = groups_pb2.ListGrantsRequest(resource_type="model")
        groups = groups_pb2_grpc.GroupServiceStub(channel)
        assert [g.resource_id for g in (await groups.ListGrants(model_grants, metadata=ADMIN)).grants] == [secret.id]
        await llm.stub.DeleteModel(llm_pb2.DeleteModelRequest(model_id=secret.id), metadata=ADMIN)
        assert [g.resource_id for g in (await groups.ListGrants(model_grants, metadata=ADMIN)).grants] == []
