"""Faults in the production topology, each checked for lost or duplicated work: replicas and the worker SIGKILLed,
Redis restarted, the upstream model failing, PostgreSQL connections dropped."""

from __future__ import annotations

import signal
import time

import httpx
from pymilvus import MilvusClient

from tests.chat.fake_upstream import expected_answer
from tests.cluster.api import Event, answer_message, call, register_model, sse, text_of
from tests.cluster.rig import AUTH
from tests.cluster.test_cross_replica import new_session, wait_file
from tests.conftest import _pg_admin


def resume_through_front(cluster, turn: str, events: list[Event]) -> list[Event]:
    """Follow a turn through the front from the last seq seen, as a browser's EventSource would after a drop."""
    more = list(sse(cluster.url, "GET", f"/v1/turns/{turn}/events", last_event_id=events[-1].seq))
    return events + more


def assert_one_log(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), [e.seq for e in events]


def test_killing_the_replica_a_client_reads_from_loses_nothing(cluster):
    """The turn runs on replica 0; the client follows it on replica 1, which dies; it resumes through the front
    (which now reaches replica 0 only) and gets the whole answer exactly once."""
    runner, reader = cluster.replica_url(0), cluster.replica_url(1)
    session = new_session(runner, "reader dies")
    started = sse(runner, "POST", f"/v1/sessions/{session}:chat", {"content": "[tokens=300 delay=0.01] go"})
    turn = next(started).data["turn_id"]
    on_reader = sse(reader, "GET", f"/v1/turns/{turn}/events")
    seen = [next(on_reader) for _ in range(20)]
    cluster.replicas[1].stop(signal.SIGKILL)
    try:
        events = resume_through_front(cluster, turn, seen)
        assert_one_log(events)
        assert events[-1].what == "ended"
        assert text_of(events) == expected_answer(300) == answer_message(runner, session)["content"]
        list(started)  # the runner's own stream completes too
    finally:
        cluster.restart_replica(1)


def test_killing_the_replica_running_a_turn_continues_it_on_the_other(cluster):
    """The replica generating the answer dies: the other one notices the lapsed lease and continues the turn,
    asking the model for the rest after the text already logged. The client, resuming through the front, gets the
    whole answer once, in one log."""
    victim, survivor = cluster.replica_url(0), cluster.replica_url(1)
    session = new_session(victim, "runner dies")
    stream = sse(victim, "POST", f"/v1/sessions/{session}:chat", {"content": "[tokens=300 delay=0.01] go"})
    seen = [next(stream) for _ in range(30)]
    cluster.replicas[0].stop(signal.SIGKILL)
    try:
        events = resume_through_front(cluster, seen[0].data["turn_id"], seen)
        assert_one_log(events)
        assert events[-1].what == "ended", [e.data for e in events[-2:]]
        assert text_of(events) == expected_answer(300)
        stored = answer_message(survivor, session)
        assert stored["status"] == "MESSAGE_STATUS_COMPLETE" and stored["content"] == expected_answer(300)
        prefill = cluster.upstream.requests[-1]["messages"][-1]
        assert prefill["role"] == "assistant" and expected_answer(300).startswith(prefill["content"])
        assert "continued by replica" in cluster.replicas[1].output()
        again = list(sse(survivor, "POST", f"/v1/sessions/{session}:chat", {"content": "[tokens=3] again"}))
        assert again[-1].what == "ended" and text_of(again) == expected_answer(3)
    finally:
        cluster.restart_replica(0)


def test_a_worker_killed_mid_ingest_is_replaced_and_the_file_completes_once(cluster):
    base = cluster.url
    kb = call(base, "POST", "/v1/knowledge-bases", {"name": "durable"})["knowledge_base"]
    rule = {"chunk_size": 40, "chunk_overlap": 0}
    text = (
        "\n\n".join(
            f"Section {i}: the tide tables for berth {i} list high water at {i % 12} o'clock." for i in range(60)
        )
        + "\n\nThe lighthouse keeper's cat is named Biscuit."
    )
    expected = call(
        base, "POST", f"/v1/knowledge-bases/{kb['id']}:preview-chunks", {"text": text, "chunking_rule": rule}
    )["total_chunks"]
    assert expected >= 12
    cluster.restart_worker(
        {"TYPECASE_KNOWLEDGE_INGEST_STEP_DELAY_SECONDS": "0.3", "TYPECASE_KNOWLEDGE_EMBED_BATCH_SIZE": "2"}
    )
    r = httpx.post(
        f"{base}/v1/knowledge-bases/{kb['id']}/files",
        headers=AUTH,
        timeout=60,
        data={"chunking_rule.chunk_size": "40", "chunking_rule.chunk_overlap": "0"},
        files={"file": ("tides.txt", text.encode(), "text/plain")},
    )
    assert r.status_code == 200, r.text
    file_id = r.json()["file"]["id"]
    deadline = time.monotonic() + 90
    while True:
        file = call(base, "GET", f"/v1/files/{file_id}")["file"]
        if file["status"] == "FILE_STATUS_EMBEDDING" and file["progress_percent"] >= 20:
            break
        assert file["status"] != "FILE_STATUS_DONE", "ingestion finished before the worker could be killed"
        assert time.monotonic() < deadline, cluster.worker.output()
        time.sleep(0.1)
    cluster.restart_worker()  # SIGKILL, then a fresh worker that retakes the job once its lease lapses

    final = wait_file(base, file_id)
    assert final["status"] == "FILE_STATUS_DONE", final
    assert int(final["chunk_count"]) == expected
    assert int(call(base, "GET", f"/v1/knowledge-bases/{kb['id']}")["knowledge_base"]["chunk_count"]) == expected
    milvus = MilvusClient(uri=cluster.milvus.uri, dedicated=True)  # a channel of its own: see rig.MilvusServer
    try:
        collection = next(c for c in milvus.list_collections() if c.startswith(f"kb_{kb['id'].lower()}_"))
        rows = milvus.query(
            collection, filter=f'file_id == "{file_id}"', output_fields=["id"], consistency_level="Strong"
        )
    finally:
        milvus.close()
    chunk_ids = [row["id"] for row in rows]
    assert len(chunk_ids) == len(set(chunk_ids)) == expected  # no vector written twice, none missing
    hits = call(base, "POST", "/v1/knowledge-bases:search", {"kb_ids": [kb["id"]], "query": "name of the cat"})
    assert "Biscuit" in hits["hits"][0]["text"]


def test_redis_restarting_fails_calls_clearly_and_recovers_without_a_server_restart(cluster):
    session = new_session(cluster.url, "redis outage")
    cluster.redis.stop()
    try:
        for base in (cluster.replica_url(0), cluster.replica_url(1)):
            ready = httpx.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 503 and not ready.json()["resources"]["cache/redis"]["ok"]
            r = httpx.post(
                f"{base}/v1/sessions/{session}:chat",
                headers={**AUTH, "accept": "text/event-stream"},
                json={"content": "[tokens=3] during"},
                timeout=30,
            )
            assert r.status_code == 503, r.text
            assert "Redis is unreachable" in r.json()["message"] and r.headers["retry-after"] == "1"
    finally:
        cluster.redis.start()
    deadline = time.monotonic() + 20
    for base in (cluster.replica_url(0), cluster.replica_url(1)):
        while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.2)
    for _ in range(2):  # one turn per replica: the session was not left locked by the failed attempts
        events = list(sse(cluster.url, "POST", f"/v1/sessions/{session}:chat", {"content": "[tokens=4] after"}))
        assert events[-1].what == "ended" and text_of(events) == expected_answer(4)
    messages = call(cluster.url, "GET", f"/v1/sessions/{session}/messages")["messages"]
    assert len(messages) == 4  # the failed attempts stored nothing


def test_a_failing_model_falls_back_on_both_replicas(cluster):
    healthy = register_model(cluster.url, cluster.upstream.base_url, "healthy")
    failing = register_model(cluster.url, "http://127.0.0.1:9/v1", "failing", fallbacks=[healthy["id"]])
    for i in range(6):
        r = httpx.post(
            f"{cluster.replica_url(i % 2)}/v1/models/{failing['id']}:complete",
            headers=AUTH,
            timeout=30,
            json={"messages": [{"role": "MESSAGE_ROLE_USER", "content": "[tokens=3] hi"}]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["text"] == expected_answer(3) and r.json()["served_model_id"] == healthy["id"]
    status = call(cluster.url, "GET", f"/v1/models/{failing['id']}")["model"]["status"]
    assert status["breaker_state"] == "BREAKER_STATE_OPEN"  # opened after 3 failures, counted across replicas


def test_dropped_database_connections_are_replaced_by_the_pools(cluster):
    for base in (cluster.replica_url(0), cluster.replica_url(1)):
        call(base, "GET", "/v1/sessions")  # both pools hold open connections
    _pg_admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{cluster.database}' "
        "AND pid <> pg_backend_pid()"
    )
    for base in (cluster.replica_url(0), cluster.replica_url(1)) * 3:
        session = call(base, "POST", "/v1/sessions", {"title": "after the drop"})["session"]
        assert call(base, "GET", f"/v1/sessions/{session['id']}")["session"]["title"] == "after the drop"
