"""Failed calls raise the TypecaseError subclass of their status code, carrying the server's ErrorInfo."""

from __future__ import annotations

import grpc
import pytest

from typecase.client import (
    Client,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    TypecaseError,
    Unauthenticated,
)
from typecase.v1 import common_pb2


def test_missing_and_unknown_credentials_are_unauthenticated(hosted):
    with Client(hosted.target) as anonymous:
        with pytest.raises(Unauthenticated) as missing:
            anonymous.chat.create_session()
    assert missing.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert missing.value.reason == Reason.UNAUTHENTICATED == "UNAUTHENTICATED"
    assert missing.value.trace_id  # the server's trace id, to find the call in its logs

    with Client(hosted.target, api_key="tc_not-a-real-key") as stranger:
        with pytest.raises(Unauthenticated) as unknown:
            stranger.auth.me()
    assert unknown.value.reason == "UNAUTHENTICATED"


def test_a_proxy_scoped_key_is_refused_by_the_api(hosted, client):
    created = client.auth.create_api_key("sdk proxy key", scopes=["proxy"])
    assert list(created.api_key.scopes) == ["proxy"]
    with Client(hosted.target, api_key=created.secret) as proxy_only:
        with pytest.raises(PermissionDenied) as denied:
            proxy_only.auth.me()
    assert "'api' scope" in denied.value.message


def test_login_and_permissions_map_their_reasons(hosted, client):
    client.auth.create_user("sdk-erin", "correct horse battery")
    with Client(hosted.target) as erin:
        with pytest.raises(Unauthenticated) as wrong:
            erin.auth.login("sdk-erin", "wrong password")
        assert wrong.value.reason == Reason.INVALID_CREDENTIALS

        tokens = erin.auth.login("sdk-erin", "correct horse battery")
        assert erin.credential == tokens.access_token  # later calls use the token
        assert erin.auth.me().user.username == "sdk-erin"
        with pytest.raises(PermissionDenied) as denied:
            erin.auth.create_user("sdk-mallory", "correct horse battery")
        assert denied.value.reason == Reason.PERMISSION_DENIED
        assert isinstance(denied.value, TypecaseError)


def test_missing_and_deleted_sessions_are_not_found(client):
    with pytest.raises(NotFound) as missing:
        client.chat.get_session("01NOTASESSION0000000000000")
    assert missing.value.reason == "NOT_FOUND"
    assert missing.value.metadata.get("id") == "01NOTASESSION0000000000000"

    session = client.chat.create_session(title="short-lived")
    client.chat.delete_session(session.id)
    with pytest.raises(NotFound) as deleted:
        client.chat.get_session(session.id)
    assert deleted.value.reason == Reason.SESSION_DELETED


def test_a_refused_question_raises_from_the_stream(client):
    session = client.chat.create_session()
    with pytest.raises(InvalidArgument) as refused:
        list(client.chat.stream(session.id, "   "))
    assert refused.value.reason == "INVALID_ARGUMENT" and refused.value.metadata.get("field") == "content"


def test_reason_enum_matches_the_contract():
    names = {name.removeprefix("ERROR_REASON_") for name in common_pb2.ErrorReason.keys()} - {"UNSPECIFIED"}
    assert {reason.value for reason in Reason} == names


def test_registration_closed_and_invite_codes_through_the_sdk(client):
    issued = client.auth.create_invite_code(note="sdk", max_uses=2)
    assert issued.code.startswith("inv_") and issued.invite_code.max_uses == 2
    assert issued.invite_code.id in [c.id for c in client.auth.list_invite_codes()]
    client.auth.delete_invite_code(issued.invite_code.id)
    assert issued.invite_code.id not in [c.id for c in client.auth.list_invite_codes()]
    with pytest.raises(PermissionDenied) as closed:  # the test server keeps self-registration off
        client.auth.register("newcomer", "a long password", invite_code=issued.code, use=False)
    assert closed.value.reason == Reason.REGISTRATION_CLOSED
