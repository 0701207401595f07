"""Sessions, messages and feedback over real gRPC against the real App: lifecycle, listing, ownership, limits."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from tests.chat.conftest import new_user
from tests.chat.helpers import chat_all, get_session, messages, new_session, reason
from typecase.server.infra.audit import AuditLog
from typecase.v1 import chat_pb2

Q, A = chat_pb2.MESSAGE_CATEGORY_QUESTION, chat_pb2.MESSAGE_CATEGORY_ANSWER


async def add_pairs(who, session_id, *pairs, **fields):
    return list(
        (
            await who.chat.AddMessages(
                chat_pb2.AddMessagesRequest(
                    session_id=session_id,
                    pairs=[chat_pb2.MessagePair(question=q, answer=a, **fields) for q, a in pairs],
                ),
                metadata=who.md,
            )
        ).messages
    )


async def feedback(who, message_id, action, comment=""):
    return (
        await who.chat.SetMessageFeedback(
            chat_pb2.SetMessageFeedbackRequest(message_id=message_id, action=action, comment=comment), metadata=who.md
        )
    ).message


async def expect(code, awaitable, why: str | None = None):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await awaitable
    assert failure.value.code() == code, failure.value.details()
    if why is not None:
        assert reason(failure.value) == why
    return failure.value


async def test_session_message_and_feedback_lifecycle(alice, admin, fake_model, chat_app):
    meta = struct_pb2.Struct()
    meta.update({"pinned": True})
    session = await new_session(alice, title="Trip planning", system_prompt="Be brief.", metadata=meta)
    assert session.kind == chat_pb2.SESSION_KIND_MODEL
    assert session.model_id == fake_model.id and session.app_name == "fake-chat"
    assert session.owner_id == alice.user_id and session.metadata["pinned"] is True
    assert session.message_count == 0 and not session.HasField("latest_message_time")

    added = await add_pairs(alice, session.id, ("Where to?", "Lisbon."), ("When?", "In May."))
    assert [(m.category, m.content) for m in added] == [(Q, "Where to?"), (A, "Lisbon."), (Q, "When?"), (A, "In May.")]
    assert [m.id for m in added] == sorted(m.id for m in added)
    assert all(m.status == chat_pb2.MESSAGE_STATUS_COMPLETE for m in added)
    session = await get_session(alice, session.id)
    assert session.message_count == 4 and session.latest_message_preview == "In May."

    # Cursor pagination both ways; a token keeps its direction.
    page = await alice.chat.ListMessages(
        chat_pb2.ListMessagesRequest(session_id=session.id, page_size=3), metadata=alice.md
    )
    assert [m.id for m in page.messages] == [m.id for m in added[:3]] and page.next_page_token
    rest = await alice.chat.ListMessages(
        chat_pb2.ListMessagesRequest(session_id=session.id, page_size=3, page_token=page.next_page_token),
        metadata=alice.md,
    )
    assert [m.id for m in rest.messages] == [added[3].id] and not rest.next_page_token
    backwards = await alice.chat.ListMessages(
        chat_pb2.ListMessagesRequest(session_id=session.id, page_size=3, newest_first=True), metadata=alice.md
    )
    assert [m.id for m in backwards.messages] == [m.id for m in reversed(added)][:3]
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        alice.chat.ListMessages(
            chat_pb2.ListMessagesRequest(session_id=session.id, page_token=page.next_page_token, newest_first=True),
            metadata=alice.md,
        ),
    )

    # Edit an answer (it is the latest message, so the preview follows).
    edited = (
        await alice.chat.UpdateMessage(
            chat_pb2.UpdateMessageRequest(
                message=chat_pb2.Message(id=added[3].id, content="Early May."),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
            metadata=alice.md,
        )
    ).message
    assert edited.content == "Early May." and edited.update_time.ToDatetime() >= added[3].update_time.ToDatetime()
    assert (await get_session(alice, session.id)).latest_message_preview == "Early May."
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        alice.chat.UpdateMessage(
            chat_pb2.UpdateMessageRequest(
                message=chat_pb2.Message(id=added[3].id, content="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["role"]),
            ),
            metadata=alice.md,
        ),
    )

    # Feedback: like, dislike with a comment, cancel, copied; counts aggregated on the session.
    answer = added[1].id
    liked = await feedback(alice, answer, chat_pb2.FEEDBACK_ACTION_LIKE)
    assert liked.rating == chat_pb2.MESSAGE_RATING_LIKE
    assert (await feedback(alice, answer, chat_pb2.FEEDBACK_ACTION_LIKE)).rating == chat_pb2.MESSAGE_RATING_LIKE
    s = await get_session(alice, session.id)
    assert (s.like_count, s.dislike_count) == (1, 0)  # liking twice counts once
    disliked = await feedback(alice, answer, chat_pb2.FEEDBACK_ACTION_DISLIKE, "too short")
    assert disliked.rating == chat_pb2.MESSAGE_RATING_DISLIKE and disliked.feedback_comment == "too short"
    s = await get_session(alice, session.id)
    assert (s.like_count, s.dislike_count) == (0, 1)
    cancelled = await feedback(alice, answer, chat_pb2.FEEDBACK_ACTION_CANCEL)
    assert cancelled.rating == chat_pb2.MESSAGE_RATING_UNSPECIFIED and cancelled.feedback_comment == ""
    for _ in range(2):
        copied = await feedback(alice, answer, chat_pb2.FEEDBACK_ACTION_COPIED)
    assert copied.copied_count == 2
    await feedback(alice, added[3].id, chat_pb2.FEEDBACK_ACTION_DISLIKE)
    s = await get_session(alice, session.id)
    assert (s.like_count, s.dislike_count, s.copied_count) == (0, 1, 2)
    await expect(grpc.StatusCode.INVALID_ARGUMENT, feedback(alice, added[0].id, chat_pb2.FEEDBACK_ACTION_LIKE))
    await expect(grpc.StatusCode.INVALID_ARGUMENT, feedback(alice, answer, chat_pb2.FEEDBACK_ACTION_UNSPECIFIED))

    # Concurrent likes and cancels from several calls leave consistent counters.
    await asyncio.gather(
        *[
            feedback(alice, answer, chat_pb2.FEEDBACK_ACTION_LIKE if i % 2 else chat_pb2.FEEDBACK_ACTION_CANCEL)
            for i in range(10)
        ]
    )
    final = (await messages(alice, session.id))[1]
    s = await get_session(alice, session.id)
    assert s.like_count == (1 if final.rating == chat_pb2.MESSAGE_RATING_LIKE else 0) and s.dislike_count == 1

    # Deleting a disliked answer takes its counts with it.
    await alice.chat.DeleteMessage(chat_pb2.DeleteMessageRequest(message_id=added[3].id), metadata=alice.md)
    s = await get_session(alice, session.id)
    assert s.message_count == 3 and s.dislike_count == 0
    await expect(
        grpc.StatusCode.NOT_FOUND,
        alice.chat.DeleteMessage(chat_pb2.DeleteMessageRequest(message_id=added[3].id), metadata=alice.md),
    )

    # Rename with and without a mask; unknown or immutable fields are refused.
    renamed = (
        await alice.chat.UpdateSession(
            chat_pb2.UpdateSessionRequest(session=chat_pb2.Session(id=session.id, title="Lisbon in May")),
            metadata=alice.md,
        )
    ).session
    assert renamed.title == "Lisbon in May" and renamed.system_prompt == "Be brief."
    cleared = (
        await alice.chat.UpdateSession(
            chat_pb2.UpdateSessionRequest(
                session=chat_pb2.Session(id=session.id), update_mask=field_mask_pb2.FieldMask(paths=["system_prompt"])
            ),
            metadata=alice.md,
        )
    ).session
    assert cleared.system_prompt == "" and cleared.title == "Lisbon in May"
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        alice.chat.UpdateSession(
            chat_pb2.UpdateSessionRequest(
                session=chat_pb2.Session(id=session.id, owner_id="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["owner_id"]),
            ),
            metadata=alice.md,
        ),
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        alice.chat.UpdateSession(
            chat_pb2.UpdateSessionRequest(
                session=chat_pb2.Session(id=session.id, model_id="01JUNKNOWNMODEL00000000000"),
                update_mask=field_mask_pb2.FieldMask(paths=["model_id"]),
            ),
            metadata=alice.md,
        ),
        "MODEL_NOT_FOUND",
    )

    # Copy: same messages in the same order, a new owner-side session without the original's feedback.
    copy = (await alice.chat.CopySession(chat_pb2.CopySessionRequest(session_id=session.id), metadata=alice.md)).session
    assert copy.id != session.id and copy.title == "Lisbon in May (copy)" and copy.message_count == 3
    assert (copy.like_count, copy.dislike_count, copy.copied_count) == (0, 0, 0)
    original, copied_messages = await messages(alice, session.id), await messages(alice, copy.id)
    assert [(m.category, m.content) for m in copied_messages] == [(m.category, m.content) for m in original]
    assert all(m.session_id == copy.id and m.rating == chat_pb2.MESSAGE_RATING_UNSPECIFIED for m in copied_messages)

    # Soft delete: gone for the owner, listed for admins with show_deleted, messages kept.
    await alice.chat.DeleteSession(chat_pb2.DeleteSessionRequest(session_id=session.id), metadata=alice.md)
    await expect(grpc.StatusCode.NOT_FOUND, get_session(alice, session.id), "SESSION_DELETED")
    await expect(grpc.StatusCode.NOT_FOUND, add_pairs(alice, session.id, ("q", "a")), "SESSION_DELETED")
    listed = (await alice.chat.ListSessions(chat_pb2.ListSessionsRequest(), metadata=alice.md)).sessions
    assert [s.id for s in listed] == [copy.id]
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        alice.chat.ListSessions(chat_pb2.ListSessionsRequest(show_deleted=True), metadata=alice.md),
    )
    audit_view = (
        await admin.chat.ListSessions(
            chat_pb2.ListSessionsRequest(owner_id=alice.user_id, show_deleted=True), metadata=admin.md
        )
    ).sessions
    deleted = next(s for s in audit_view if s.id == session.id)
    assert deleted.HasField("delete_time")
    assert len(await messages(admin, session.id)) == 3

    events = await AuditLog(chat_app.resources.db).query(limit=100, actor_id=alice.user_id)
    actions = {e.action for e in events}
    assert {
        "chat.session.create",
        "chat.messages.add",
        "chat.message.update",
        "chat.message.feedback",
        "chat.message.delete",
        "chat.session.update",
        "chat.session.copy",
        "chat.session.delete",
    } <= actions


async def test_list_sessions_filters_orders_and_pages(alice, fake_model):
    sessions = [await new_session(alice, title=f"session {i}") for i in range(5)]
    await add_pairs(alice, sessions[1].id, ("How do sourdough starters work?", "Wild yeast."))
    await chat_all(alice, sessions[3].id, "[tokens=3] say something")  # activity moves it to the top

    listed = await alice.chat.ListSessions(chat_pb2.ListSessionsRequest(), metadata=alice.md)
    assert listed.total_size == 5
    order = [s.id for s in listed.sessions]
    assert order[:2] == [sessions[3].id, sessions[1].id]
    assert order[2:] == [sessions[4].id, sessions[2].id, sessions[0].id]
    latest = listed.sessions[0]
    assert latest.message_count == 2 and latest.latest_message_preview.startswith("alpha0")

    seen, token = [], ""
    while True:
        page = await alice.chat.ListSessions(
            chat_pb2.ListSessionsRequest(page_size=2, page_token=token), metadata=alice.md
        )
        assert len(page.sessions) <= 2 and page.total_size == 5
        seen += [s.id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert seen == order

    by_content = await alice.chat.ListSessions(chat_pb2.ListSessionsRequest(keyword="SOURDOUGH"), metadata=alice.md)
    assert [s.id for s in by_content.sessions] == [sessions[1].id]
    by_title = await alice.chat.ListSessions(chat_pb2.ListSessionsRequest(keyword="session 4"), metadata=alice.md)
    assert [s.id for s in by_title.sessions] == [sessions[4].id]
    literal = await alice.chat.ListSessions(chat_pb2.ListSessionsRequest(keyword="%"), metadata=alice.md)
    assert literal.sessions == []  # LIKE wildcards in the keyword are literal
    by_model = await alice.chat.ListSessions(chat_pb2.ListSessionsRequest(model_id=fake_model.id), metadata=alice.md)
    assert by_model.total_size == 5
    other_model = await alice.chat.ListSessions(chat_pb2.ListSessionsRequest(model_id="01JNOPE"), metadata=alice.md)
    assert other_model.total_size == 0
    flows = await alice.chat.ListSessions(
        chat_pb2.ListSessionsRequest(kind=chat_pb2.SESSION_KIND_FLOW), metadata=alice.md
    )
    assert flows.total_size == 0
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        alice.chat.ListSessions(chat_pb2.ListSessionsRequest(page_token="garbage!"), metadata=alice.md),
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        alice.chat.ListSessions(chat_pb2.ListSessionsRequest(page_size=-1), metadata=alice.md),
    )


async def test_users_cannot_see_or_touch_each_others_sessions(alice, bob, admin):
    session = await new_session(alice, title="private")
    question, answer = await add_pairs(alice, session.id, ("secret?", "yes"))
    ended = (await chat_all(alice, session.id, "[tokens=2] hi"))[-1]
    turn_id = ended.turn_id

    calls = [
        bob.chat.GetSession(chat_pb2.GetSessionRequest(session_id=session.id), metadata=bob.md),
        bob.chat.UpdateSession(
            chat_pb2.UpdateSessionRequest(session=chat_pb2.Session(id=session.id, title="mine")), metadata=bob.md
        ),
        bob.chat.DeleteSession(chat_pb2.DeleteSessionRequest(session_id=session.id), metadata=bob.md),
        bob.chat.CopySession(chat_pb2.CopySessionRequest(session_id=session.id), metadata=bob.md),
        bob.chat.ListMessages(chat_pb2.ListMessagesRequest(session_id=session.id), metadata=bob.md),
        add_pairs(bob, session.id, ("q", "a")),
        bob.chat.UpdateMessage(
            chat_pb2.UpdateMessageRequest(message=chat_pb2.Message(id=answer.id, content="x")), metadata=bob.md
        ),
        bob.chat.DeleteMessage(chat_pb2.DeleteMessageRequest(message_id=question.id), metadata=bob.md),
        feedback(bob, answer.id, chat_pb2.FEEDBACK_ACTION_LIKE),
        chat_all(bob, session.id, "hello"),
        bob.chat.StopTurn(chat_pb2.StopTurnRequest(turn_id=turn_id), metadata=bob.md),
    ]
    for call in calls:
        await expect(grpc.StatusCode.NOT_FOUND, call)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        [m async for m in bob.chat.StreamTurnEvents(chat_pb2.StreamTurnEventsRequest(turn_id=turn_id), metadata=bob.md)]
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND and reason(failure.value) == "TURN_NOT_FOUND"
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        bob.chat.ListSessions(chat_pb2.ListSessionsRequest(owner_id=alice.user_id), metadata=bob.md),
    )
    assert (await bob.chat.ListSessions(chat_pb2.ListSessionsRequest(), metadata=bob.md)).sessions == []

    # Nothing changed, and an admin sees it all.
    kept = await get_session(admin, session.id)
    assert kept.title == "private" and kept.message_count == 4 and kept.like_count == 0
    assert len(await messages(admin, session.id)) == 4


async def test_limits_are_enforced_with_field_names(alice, channel):
    session = await new_session(alice)
    failure = await expect(grpc.StatusCode.INVALID_ARGUMENT, chat_all(alice, session.id, "x" * 32_001))
    assert failure.details().startswith("content:")
    failure = await expect(grpc.StatusCode.INVALID_ARGUMENT, chat_all(alice, session.id, "   "))
    assert failure.details().startswith("content:")
    big = struct_pb2.Struct()
    big.update({"blob": "x" * 17_000})
    failure = await expect(grpc.StatusCode.INVALID_ARGUMENT, new_session(alice, metadata=big))
    assert failure.details().startswith("session.metadata:")
    failure = await expect(grpc.StatusCode.INVALID_ARGUMENT, add_pairs(alice, session.id, *[("q", "a")] * 101))
    assert failure.details().startswith("pairs:")
    failure = await expect(grpc.StatusCode.INVALID_ARGUMENT, add_pairs(alice, session.id, ("q", "")))
    assert failure.details().startswith("pairs[0].answer:")
    failure = await expect(grpc.StatusCode.INVALID_ARGUMENT, new_session(alice, flow_id="01JFLOW", model_id="m"))
    await expect(
        grpc.StatusCode.NOT_FOUND, new_session(alice, model_id="01JUNKNOWNMODEL00000000000"), "MODEL_NOT_FOUND"
    )
    await expect(grpc.StatusCode.NOT_FOUND, get_session(alice, "01JNOSUCHSESSION0000000000"))
    carol = await new_user(channel, "carol")
    assert (await carol.chat.ListSessions(chat_pb2.ListSessionsRequest(), metadata=carol.md)).total_size == 0
