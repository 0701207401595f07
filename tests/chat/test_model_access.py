"""Chat turns reach models through LLMService, so a restricted model (issue 25) serves only the users granted it:
alice, without a grant, gets MODEL_NOT_FOUND for her turn; bob, granted the model, chats."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from tests.chat.conftest import bearer
from tests.chat.helpers import chat_all, error_info, kinds, new_session
from tests.conftest import ADMIN_KEY
from typecase.v1 import groups_pb2, groups_pb2_grpc, llm_pb2


async def turn_error(who, session_id: str) -> tuple[grpc.StatusCode | int, str]:
    """(code, reason) of a refused turn, whether refused before it started or in band."""
    try:
        events = await chat_all(who, session_id, "hi")
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    assert kinds(events)[-1] == "error"
    status = events[-1].event.error
    return status.code, error_info(status).reason


async def test_a_restricted_chat_model_serves_granted_users_only(channel, admin, fake_model, alice, bob):
    await admin.llm.UpdateModel(
        llm_pb2.UpdateModelRequest(
            model=llm_pb2.Model(id=fake_model.id, access=llm_pb2.MODEL_ACCESS_RESTRICTED),
            update_mask=field_mask_pb2.FieldMask(paths=["access"]),
        ),
        metadata=admin.md,
    )
    await groups_pb2_grpc.GroupServiceStub(channel).CreateGrant(
        groups_pb2.CreateGrantRequest(
            grant=groups_pb2.Grant(
                resource_type="model",
                resource_id=fake_model.id,
                grantee_type=groups_pb2.GRANTEE_TYPE_USER,
                grantee_id=bob.user_id,
            )
        ),
        metadata=bearer(ADMIN_KEY),
    )
    for kwargs in ({}, {"model_id": fake_model.id}):  # the default chat model, and the model by id
        session = await new_session(alice, **kwargs)
        code, reason = await turn_error(alice, session.id)
        assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND.value[0]), (code, reason)

    session = await new_session(bob, model_id=fake_model.id)
    assert kinds(await chat_all(bob, session.id, "hi"))[-1] != "error"
