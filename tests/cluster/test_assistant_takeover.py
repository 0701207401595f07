"""An assistant turn survives the SIGKILL of the replica running it during a slow tool call: the other replica
takes the turn over at its last step, the tool server sees every call whose result was logged exactly once, the
non-idempotent call that was cut off is not placed again (the model is told it was interrupted), and the client,
resuming through the front, reads one log to the end."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.assistants.scripted import ScriptedUpstream
from tests.cluster.api import answer_message, call, register_model, sse
from tests.cluster.test_faults import assert_one_log, resume_through_front
from tests.tools.servers import start, stop


@pytest.fixture(scope="module")
def scripted():
    server = ScriptedUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow_url():
    proc, port = start("tests.assistants.slow_service", "{port}")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def tool_named(base: str, provider_id: str, name: str) -> str:
    tools = call(base, "GET", "/v1/tools", provider_id=provider_id, page_size=100)["tools"]
    return next(t["id"] for t in tools if t["name"] == name)


def test_sigkill_during_a_slow_tool_call_the_turn_completes_on_the_other_replica(cluster, scripted, slow_url):
    victim = cluster.replica_url(0)
    model = register_model(victim, scripted.base_url + "/v1", "cluster-agent")
    provider = call(
        victim,
        "POST",
        "/v1/tool-providers",
        {
            "name": "slow",
            "kind": "TOOL_PROVIDER_KIND_OPENAPI",
            "openapi": {"document_url": f"{slow_url}/openapi.json"},
        },
    )["provider"]
    assert provider["last_error"] == ""
    order, wait = tool_named(victim, provider["id"], "placeOrder"), tool_named(victim, provider["id"], "wait")
    assistant = call(
        victim, "POST", "/v1/assistants", {"name": "durable", "model_id": model["id"], "tool_ids": [order, wait]}
    )["assistant"]
    session = call(victim, "POST", "/v1/sessions", {"assistant_id": assistant["id"]})["session"]["id"]
    scripted.program(
        [
            {"name": "placeOrder", "arguments": {"body": {"item": "book", "seconds": 30}}},
            {"name": "wait", "arguments": {"seconds": 0.3}},
        ],
        "answer",
    )
    stream = sse(victim, "POST", f"/v1/sessions/{session}:chat", {"content": "order a book and wait"})
    seen = []
    for event in stream:
        seen.append(event)
        tool = event.data["event"].get("node", {}).get("tool", {})
        if tool.get("name") == "wait" and tool.get("status") == "TOOL_STEP_STATUS_SUCCEEDED":
            break
    cluster.replicas[0].stop(signal.SIGKILL)
    try:
        events = resume_through_front(cluster, seen[0].data["turn_id"], seen)
        assert_one_log(events)
        assert events[-1].what == "ended", [e.data for e in events[-2:]]
        answer = events[-1].data["event"]["ended"]["answer"]
        steps = {s["tool"]["name"]: s["tool"] for s in answer["steps"]}
        assert steps["placeOrder"]["reason"] == "TOOL_INTERRUPTED"
        assert steps["wait"]["status"] == "TOOL_STEP_STATUS_SUCCEEDED"
        assert "interrupted" in answer["content"] and "waited-0.3" in answer["content"]
        stats = httpx.get(f"{slow_url}/stats").json()
        assert stats.get("order.started") == 1 and stats.get("wait.started") == 1  # each logged call once
        assert "continued by replica" in cluster.replicas[1].output()
        stored = answer_message(cluster.replica_url(1), session)
        assert stored["status"] == "MESSAGE_STATUS_COMPLETE" and stored["content"] == answer["content"]
    finally:
        cluster.restart_replica(0)
        time.sleep(0.1)
