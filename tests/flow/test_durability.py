"""Runs outlive the process running them: with PostgreSQL and Redis shared by two `typecase serve` processes,
a run paused for input survives SIGKILL of its server and finishes after ResumeRun on the other; a run
interrupted mid-node is continued by the other from its last checkpoint once its lease lapses; and the run
time limit ends a run that takes too long."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import redis

from tests.conftest import REDIS_URL
from tests.flow.support import admin, chain, collect, create_flow, kinds, node, outputs, reason_of, resume, run_flow
from typecase.v1 import flow_pb2

REDIS_DB = 9


def server_env(database_url: str) -> dict[str, str]:
    return {
        "TYPECASE_DATABASE_URL": database_url,
        "TYPECASE_REDIS_URL": f"{REDIS_URL}/{REDIS_DB}",
        "TYPECASE_FLOW_LEASE_SECONDS": "2",
        "TYPECASE_FLOW_SWEEP_INTERVAL_SECONDS": "0.5",
        "TYPECASE_FLOW_FOLLOW_POLL_SECONDS": "0.3",
        "TYPECASE_FLOW_RUN_TIMEOUT_SECONDS": "4",
        "TYPECASE_SHUTDOWN_GRACE_SECONDS": "1",
    }


async def wait_for(predicate, timeout: float = 30, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError("condition not met in time")


async def test_runs_survive_killing_the_server(server_factory, pg_database_url):
    redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}").flushdb()
    env = server_env(pg_database_url)
    first = server_factory(env=env, name="first").start()
    first.wait_ready()
    async with grpc.aio.insecure_channel(first.grpc_target) as channel:
        root = admin(channel)
        waiting_flow = await create_flow(
            root,
            "asks",
            chain(
                node("start", "start"),
                node("ask", "input", prompt="Say something"),
                node("p", "prompt", template="you said {{ask.text}}"),
                node("end", "end", outputs={"said": "{{p.text}}"}),
            ),
        )
        paused = await run_flow(root, waiting_flow.id)
        assert kinds(paused)[-1] == "input_required"
        paused_id = paused[0].run_id

        busy_flow = await create_flow(
            root,
            "busy",
            chain(
                node("start", "start"),
                node("slow", "code", code="import time\ndef main():\n    time.sleep(1.2)\n    return {'ok': 1}"),
                node("end", "end", outputs={"ok": "{{slow.ok}}"}),
            ),
        )
        stream = root.flow.RunFlow(flow_pb2.RunFlowRequest(flow_id=busy_flow.id), metadata=root.md)
        started = [await stream.read()]
        busy_id = started[0].run_id
        while not (kinds(started)[-1] == "node_started" and started[-1].event.node_started.node_id == "slow"):
            started.append(await stream.read())
        first.stop(signal.SIGKILL)  # mid-node: the run's row still says RUNNING, leased by a dead process
        killed_at = time.monotonic()

    second = server_factory(env=env, name="second").start()
    second.wait_ready()
    async with grpc.aio.insecure_channel(second.grpc_target) as channel:
        root = admin(channel)
        # The paused run: answered on the other process, its log continuing where it stopped.
        more = await resume(root, paused_id, "ask", {"text": "hello"})
        assert more[0].seq == paused[-1].seq + 1 and kinds(more)[-1] == "run_finished"
        assert outputs(more) == {"said": "you said hello"}
        whole = await collect(
            root.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=paused_id), metadata=root.md)
        )
        assert [m.seq for m in whole] == list(range(1, more[-1].seq + 1))

        # The interrupted run: continued here from its last checkpoint (the slow node runs again).
        async def ended():
            run = (await root.flow.GetRun(flow_pb2.GetRunRequest(run_id=busy_id), metadata=root.md)).run
            return run if run.status != flow_pb2.RUN_STATUS_RUNNING else None

        run = await wait_for(ended, 30)
        assert run.status == flow_pb2.RUN_STATUS_FINISHED and dict(run.outputs) == {"ok": 1.0}
        assert time.monotonic() - killed_at >= 2  # not before the dead process's lease lapsed
        slow = [(n.attempt, n.status) for n in run.nodes if n.node_id == "slow"]
        assert slow == [(2, flow_pb2.NODE_RUN_STATUS_SUCCEEDED)]
        events = await collect(
            root.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=busy_id), metadata=root.md)
        )
        seqs = [m.seq for m in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert kinds(events)[0] == "run_started" and kinds(events)[-1] == "run_finished"
        assert [
            m.event.node_started.attempt
            for m in events
            if m.event.HasField("node_started") and m.event.node_started.node_id == "slow"
        ] == [1, 2]

        # The run time limit (4s here) fails a run that takes longer: its node would sleep 9 s (under the node's own
        # 10 s wall limit), so ending before 8 s is the run limit at work, with seconds to spare on a loaded machine.
        long_flow = await create_flow(
            root,
            "too long",
            chain(
                node("start", "start"),
                node("slow", "code", code="import time\ndef main():\n    time.sleep(9)\n    return {}"),
                node("end", "end"),
            ),
        )
        began = time.monotonic()
        events = await run_flow(root, long_flow.id, timeout=30)
        took = time.monotonic() - began
        assert 3.5 < took < 8, f"{took:.2f}s: {kinds(events)}\n{events[-1]}\n{second.output()[-4000:]}"
        status = events[-1].event.run_failed
        assert reason_of(status) == "RUN_LIMIT_EXCEEDED" and status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    second.stop()
