"""AssistantService over gRPC and REST: an owner creates, edits and publishes; others see only online assistants
(NOT_FOUND for drafts, never editable); bad settings are INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from tests.tools.support import bearer, new_user, reason
from typecase.v1 import assistant_pb2, assistant_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="package")


def stub(channel) -> assistant_pb2_grpc.AssistantServiceStub:
    return assistant_pb2_grpc.AssistantServiceStub(channel)


async def create(channel, md, **fields) -> assistant_pb2.Assistant:
    request = assistant_pb2.CreateAssistantRequest(assistant=assistant_pb2.Assistant(**fields))
    return (await stub(channel).CreateAssistant(request, metadata=md)).assistant


async def failure(rpc) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc
    return caught.value


def field_of(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2, status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.metadata.get("field", "")
    return ""


async def test_owner_creates_edits_publishes_and_others_see_only_online(achannel):
    owner, other = await new_user(achannel, "aowner"), await new_user(achannel, "aother")
    a = await create(
        achannel,
        owner.md,
        name="Helper",
        instructions="Today is {{current_date}}",
        max_steps=5,
        suggested_questions=["What time is it?"],
        tool_ids=["builtin-current_time"],
        variables=[assistant_pb2.AssistantVariable(name="tone", default_value="friendly")],
    )
    assert a.status == assistant_pb2.ASSISTANT_STATUS_DRAFT and a.owner_id == owner.user_id
    assert list(a.tool_ids) == ["builtin-current_time"] and a.variables[0].default_value == "friendly"
    s = stub(achannel)
    assert (
        await failure(s.GetAssistant(assistant_pb2.GetAssistantRequest(assistant_id=a.id), metadata=other.md))
    ).code() == grpc.StatusCode.NOT_FOUND
    listed = await s.ListAssistants(assistant_pb2.ListAssistantsRequest(), metadata=other.md)
    assert a.id not in [x.id for x in listed.assistants]

    published = (
        await s.PublishAssistant(assistant_pb2.PublishAssistantRequest(assistant_id=a.id), metadata=owner.md)
    ).assistant
    assert published.status == assistant_pb2.ASSISTANT_STATUS_ONLINE
    seen = (await s.GetAssistant(assistant_pb2.GetAssistantRequest(assistant_id=a.id), metadata=other.md)).assistant
    assert seen.instructions == "Today is {{current_date}}"
    online = await s.ListAssistants(
        assistant_pb2.ListAssistantsRequest(scope=assistant_pb2.ASSISTANT_SCOPE_ONLINE), metadata=other.md
    )
    assert a.id in [x.id for x in online.assistants]
    mine = await s.ListAssistants(
        assistant_pb2.ListAssistantsRequest(scope=assistant_pb2.ASSISTANT_SCOPE_MINE), metadata=other.md
    )
    assert a.id not in [x.id for x in mine.assistants]
    error = await failure(
        s.UpdateAssistant(
            assistant_pb2.UpdateAssistantRequest(assistant=assistant_pb2.Assistant(id=a.id, name="Mine")),
            metadata=other.md,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    updated = (
        await s.UpdateAssistant(
            assistant_pb2.UpdateAssistantRequest(
                assistant=assistant_pb2.Assistant(id=a.id, max_steps=0, description="d"),
                update_mask=field_mask_pb2.FieldMask(paths=["max_steps", "description"]),
            ),
            metadata=owner.md,
        )
    ).assistant
    assert updated.max_steps == 0 and updated.description == "d" and updated.instructions == a.instructions
    await s.UnpublishAssistant(assistant_pb2.UnpublishAssistantRequest(assistant_id=a.id), metadata=owner.md)
    assert (
        await failure(s.GetAssistant(assistant_pb2.GetAssistantRequest(assistant_id=a.id), metadata=other.md))
    ).code() == grpc.StatusCode.NOT_FOUND
    await s.DeleteAssistant(assistant_pb2.DeleteAssistantRequest(assistant_id=a.id), metadata=owner.md)
    assert (
        await failure(s.GetAssistant(assistant_pb2.GetAssistantRequest(assistant_id=a.id), metadata=owner.md))
    ).code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": " "}, "assistant.name"),
        ({"name": "x", "max_steps": 51}, "assistant.max_steps"),
        ({"name": "x", "max_steps": -1}, "assistant.max_steps"),
        ({"name": "x", "logo_url": "http://evil/logo.png"}, "assistant.logo_url"),
        ({"name": "x", "logo_url": "data:image/png;base64,@@@"}, "assistant.logo_url"),
        ({"name": "x", "suggested_questions": ["q"] * 11}, "assistant.suggested_questions"),
        (
            {"name": "x", "variables": [assistant_pb2.AssistantVariable(name="current_date")]},
            "assistant.variables[0].name",
        ),
        ({"name": "x", "tool_timeout_ms": 10_000_000}, "assistant.tool_timeout_ms"),
        ({"name": "x", "instructions": "i" * 20_001}, "assistant.instructions"),
    ],
)
async def test_bad_settings_name_their_field(achannel, fields, field):
    user = await new_user(achannel, "abad")
    error = await failure(create(achannel, user.md, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(error) == field


async def test_publish_checks_tools_and_duplicate_names_conflict(achannel):
    user = await new_user(achannel, "apub")
    a = await create(achannel, user.md, name="Broken", tool_ids=["no-such-tool"])
    error = await failure(
        stub(achannel).PublishAssistant(assistant_pb2.PublishAssistantRequest(assistant_id=a.id), metadata=user.md)
    )
    assert reason(error) == "TOOL_NOT_FOUND" and field_of(error) == "assistant.tool_ids[0]"
    error = await failure(create(achannel, user.md, name="Broken"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_rest_surface_creates_and_lists(aapp, achannel):
    user = await new_user(achannel, "arest")
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{aapp.http_port}", headers=dict(bearer(user.credential))
    ) as http:
        made = await http.post(
            "/v1/assistants",
            json={"name": "Rest", "max_steps": 3, "knowledge_mode": "KNOWLEDGE_MODE_BEFORE_FIRST_STEP"},
        )
        assert made.status_code == 200, made.text
        body = made.json()
        assert body["assistant"]["max_steps"] == 3
        listed = (await http.get("/v1/assistants", params={"scope": "ASSISTANT_SCOPE_MINE"})).json()
        assert [x["id"] for x in listed["assistants"]] == [body["assistant"]["id"]]
        published = await http.post(f"/v1/assistants/{body['assistant']['id']}:publish", json={})
        assert published.json()["assistant"]["status"] == "ASSISTANT_STATUS_ONLINE"
