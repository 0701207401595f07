"""What one replica starts, the other continues: chat turns, paused flows, limits, breakers and uploads, over HTTP
as a browser behind a load balancer would call them."""

from __future__ import annotations

import time

import httpx

from tests.chat.fake_upstream import expected_answer
from tests.cluster.api import answer_message, call, register_model, sse, text_of
from tests.cluster.rig import AUTH


def new_session(base: str, title: str, **fields) -> str:
    return call(base, "POST", "/v1/sessions", {"title": title, **fields})["session"]["id"]


def test_a_turn_started_on_one_replica_is_resumed_and_stopped_through_the_other(cluster):
    a, b = cluster.replica_url(0), cluster.replica_url(1)
    session = new_session(a, "across replicas")
    on_a = sse(a, "POST", f"/v1/sessions/{session}:chat", {"content": "[tokens=2000 delay=0.01] tell me"})
    first = [next(on_a) for _ in range(6)]
    turn = first[0].data["turn_id"]
    assert first[0].what == "started"

    # B replays the log after the last seq A delivered, then follows live: no gap, no repeat.
    on_b = sse(b, "GET", f"/v1/turns/{turn}/events", last_event_id=first[-1].seq)
    followed = [next(on_b) for _ in range(5)]
    assert [e.seq for e in followed] == list(range(first[-1].seq + 1, first[-1].seq + 6))

    assert call(b, "POST", f"/v1/turns/{turn}:stop", {})["stopped"] is True
    rest_a, rest_b = list(on_a), list(on_b)
    for events in (first + rest_a, first + followed + rest_b):
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].what == "ended"
        assert events[-1].data["event"]["ended"]["finish_reason"] == "FINISH_REASON_CANCELLED"
    stored = answer_message(b, session)
    assert stored["status"] == "MESSAGE_STATUS_STOPPED"
    assert stored["content"] == text_of(first + rest_a) == text_of(first + followed + rest_b)
    assert 0 < len(stored["content"]) < len(expected_answer(2000))


def test_a_flow_paused_on_one_replica_resumes_on_the_other(cluster):
    a, b = cluster.replica_url(0), cluster.replica_url(1)
    graph = {
        "nodes": [
            {"id": "start", "type": "NODE_TYPE_START", "name": "start"},
            {"id": "ask", "type": "NODE_TYPE_INPUT", "name": "ask", "params": {"prompt": "Your name?"}},
            {
                "id": "end",
                "type": "NODE_TYPE_END",
                "name": "end",
                "params": {"outputs": {"said": "Hello {{ask.text}}"}},
            },
        ],
        "edges": [{"id": "e1", "source": "start", "target": "ask"}, {"id": "e2", "source": "ask", "target": "end"}],
    }
    flow = call(a, "POST", "/v1/flows", {"name": "greeter", "graph": graph})["flow"]
    paused = list(sse(a, "POST", f"/v1/flows/{flow['id']}:run", {"inputs": {}}))
    kinds = [e.what for e in paused]
    assert kinds[-1] == "input_required", kinds
    run_id = paused[-1].data["run_id"]
    assert call(b, "GET", f"/v1/runs/{run_id}")["run"]["status"] == "RUN_STATUS_WAITING_INPUT"

    resumed = list(sse(b, "POST", f"/v1/runs/{run_id}:resume", {"node_id": "ask", "input": {"text": "Ada"}}))
    assert resumed[0].seq == paused[-1].seq + 1  # one log, continued where A left it
    assert resumed[-1].what == "run_finished", [e.data for e in resumed]
    run = call(a, "GET", f"/v1/runs/{run_id}")["run"]
    assert run["status"] == "RUN_STATUS_FINISHED"
    assert run["outputs"] == {"said": "Hello Ada"}


def test_a_requests_per_minute_limit_holds_across_both_replicas(cluster):
    model = register_model(
        cluster.replica_url(0), cluster.upstream.base_url, "limited-rpm", limits={"requests_per_minute": 5}
    )
    outcomes = []
    for _ in range(10):  # round-robin: five requests land on each replica
        r = httpx.post(
            f"{cluster.url}/v1/models/{model['id']}:complete",
            headers=AUTH,
            timeout=30,
            json={"messages": [{"role": "MESSAGE_ROLE_USER", "content": "[tokens=2] hi"}]},
        )
        outcomes.append(r.status_code)
    assert outcomes.count(200) == 5 and outcomes.count(429) == 5, outcomes
    assert set(cluster.front.connections.values()) != {0}


def test_a_breaker_opened_by_failures_on_both_replicas_refuses_on_both(cluster):
    model = register_model(cluster.replica_url(0), cluster.upstream.base_url, "breaking")
    body = {"messages": [{"role": "MESSAGE_ROLE_USER", "content": "[status=500] hi"}]}
    codes, hits = [], []
    for i in range(6):  # alternate replicas: the threshold (3 failed requests) is counted across both
        base = cluster.replica_url(i % 2)
        r = httpx.post(f"{base}/v1/models/{model['id']}:complete", headers=AUTH, json=body, timeout=30)
        codes.append((r.status_code, r.json()["details"][0].get("reason")))
        hits.append(len(cluster.upstream.requests))
    assert codes[:3] == [(503, "UPSTREAM_UNAVAILABLE")] * 3, codes
    assert codes[3:] == [(503, "CIRCUIT_OPEN")] * 3, codes
    assert hits[2] == hits[5]  # once open, neither replica reaches the upstream


def test_an_upload_to_one_replica_is_ingested_by_the_worker_and_searchable_on_the_other(cluster):
    a, b = cluster.replica_url(0), cluster.replica_url(1)
    kb = call(a, "POST", "/v1/knowledge-bases", {"name": "shared"})["knowledge_base"]
    text = "\n\n".join(f"Paragraph {i} talks about ordinary things like weather and tea." for i in range(30))
    text += "\n\nThe harbour pilot's parrot is called Quillon."
    r = httpx.post(
        f"{a}/v1/knowledge-bases/{kb['id']}/files",
        headers=AUTH,
        timeout=60,
        files={"file": ("harbour.txt", text.encode(), "text/plain")},
    )
    assert r.status_code == 200, r.text
    file_id = r.json()["file"]["id"]
    final = wait_file(b, file_id)
    assert final["status"] == "FILE_STATUS_DONE", final
    hits = call(b, "POST", "/v1/knowledge-bases:search", {"kb_ids": [kb["id"]], "query": "parrot harbour pilot"})
    assert "Quillon" in hits["hits"][0]["text"]
    assert "worker" in cluster.worker.output()  # the worker did it: the replicas run no ingestion themselves


def wait_file(base: str, file_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        file = call(base, "GET", f"/v1/files/{file_id}")["file"]
        if file["status"] in ("FILE_STATUS_DONE", "FILE_STATUS_FAILED"):
            return file
        time.sleep(0.3)
    raise AssertionError(f"file {file_id} not ingested within {timeout}s")
