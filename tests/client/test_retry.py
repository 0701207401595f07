"""Retries of idempotent calls on UNAVAILABLE (gRPC's retry policy), none for calls that change something, and
a chat stream that starts while the server is unreachable (re-sent with its request id)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.client.conftest import FAST_RECONNECT
from tests.conftest import ADMIN_KEY
from typecase.client import IDEMPOTENT_METHODS, Client, DeadlineExceeded, RetryPolicy, Unavailable

# gRPC draws each retry delay from [0, backoff]: backoffs this long make "all retries over before the server is
# up" (0.3 s) practically impossible.
PATIENT = RetryPolicy(initial_backoff=1.0, max_backoff=3.0)


def open_later(gate, delay: float = 0.3) -> threading.Timer:
    timer = threading.Timer(delay, gate.listen)
    timer.start()
    return timer


def test_an_idempotent_call_is_retried_until_the_server_is_up(gate):
    with Client(gate.target, api_key=ADMIN_KEY, retry=PATIENT, options=FAST_RECONNECT) as client:
        timer = open_later(gate)
        started = time.monotonic()
        me = client.auth.me()  # refused at first: nothing listens on the port yet
        elapsed = time.monotonic() - started
        timer.join()
    assert me.user.username == "admin"
    assert elapsed >= 0.3 and gate.connections >= 1


def test_retries_stay_within_the_deadline(gate):
    with Client(gate.target, api_key=ADMIN_KEY, timeout=0.4, retry=PATIENT, options=FAST_RECONNECT) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.auth.me()  # nothing listens: retried until the client's default deadline, then given up
        assert 0.35 < time.monotonic() - started < 2

        timer = open_later(gate, 0.5)
        assert client.auth.me(timeout=20).user.username == "admin"  # a per-call deadline overrides the default
        timer.join()


def test_a_call_that_creates_something_is_not_retried(gate, client):
    with Client(gate.target, api_key=ADMIN_KEY, retry=PATIENT, options=FAST_RECONNECT) as flaky:
        timer = open_later(gate, 2)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            flaky.chat.create_session(title="sdk never created")
        assert time.monotonic() - started < 2  # failed at once, not after the gate opened (loose for a loaded CI)
        timer.join()
        flaky.wait_until_ready(timeout=5)
        assert flaky.chat.create_session(title="sdk created").title == "sdk created"
    titles = [s.title for s in client.chat.list_sessions(keyword="sdk ")]
    assert "sdk created" in titles and "sdk never created" not in titles


def test_without_a_retry_policy_idempotent_calls_fail_fast(gate):
    with Client(gate.target, api_key=ADMIN_KEY, retry=None) as client:
        with pytest.raises(Unavailable):
            client.knowledge.get_knowledge_base("01NOTAKB")


def test_a_chat_stream_started_before_the_server_is_up_asks_once(gate, client):
    session = client.chat.create_session(title="sdk late start")
    with Client(gate.target, api_key=ADMIN_KEY, retry=PATIENT, options=FAST_RECONNECT) as flaky:
        timer = open_later(gate)
        ended = flaky.chat.stream(session.id, "Say hello.", max_tokens=4).collect()
        timer.join()
    messages = list(client.chat.list_messages(session.id))
    assert len(messages) == 2 and messages[-1].content == ended.answer.content


def test_the_retried_methods_are_the_read_only_ones():
    assert "/typecase.v1.ChatService/GetSession" in IDEMPOTENT_METHODS
    assert "/typecase.v1.KnowledgeService/Search" in IDEMPOTENT_METHODS
    assert "/typecase.v1.ChatService/StreamTurnEvents" in IDEMPOTENT_METHODS
    for changing in (
        "ChatService/CreateSession",
        "ChatService/Chat",
        "KnowledgeService/UploadFile",
        "FlowService/RunFlow",
        "AuthService/Login",
        "ChatService/DeleteSession",
    ):
        assert f"/typecase.v1.{changing}" not in IDEMPOTENT_METHODS
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=6)  # beyond gRPC's cap
