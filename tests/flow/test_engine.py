"""The engine: branches, concurrency, loops, limits, failures, pauses for people, stop, replayable events, and
the safety of the http and code nodes."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from tests.flow.support import (
    admin,
    chain,
    collect,
    create_flow,
    edge,
    graph,
    kinds,
    node,
    outputs,
    reason,
    reason_of,
    resume,
    run_flow,
    to_dict,
)
from typecase.v1 import flow_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")


@pytest.fixture
def root(fchannel):
    return admin(fchannel)


def start(*names: str) -> flow_pb2.Node:
    return node("start", "start", variables=[{"name": n} for n in names])


def sleeper(node_id: str, seconds: float, **params) -> flow_pb2.Node:
    code = f"import time\ndef main():\n    time.sleep({seconds})\n    return {{'slept': {seconds}}}"
    return node(node_id, "code", code=code, **params)


def failed_status(events):
    assert events[-1].event.HasField("run_failed"), kinds(events)
    return events[-1].event.run_failed


async def test_condition_routes_and_skips_the_other_branch(root):
    g = graph(
        [
            start("n"),
            node(
                "c",
                "condition",
                cases=[
                    {"handle": "big", "conditions": [{"left": "{{n}}", "op": ">", "right": 10}]},
                    {
                        "handle": "small",
                        "logic": "or",
                        "conditions": [
                            {"left": "{{n}}", "op": "<=", "right": "3"},
                            {"left": "{{n}}", "op": "==", "right": "7"},
                        ],
                    },
                ],
            ),
            node("big", "prompt", template="big {{n}}"),
            node("small", "prompt", template="small {{n}}"),
            node("other", "prompt", template="other {{n}}"),
            node(
                "end",
                "end",
                outputs={
                    "big": "{{big.text}}",
                    "small": "{{small.text}}",
                    "other": "{{other.text}}",
                    "branch": "{{c.branch}}",
                },
            ),
        ],
        [
            edge("start", "c"),
            edge("c", "big", "big"),
            edge("c", "small", "small"),
            edge("c", "other", "else"),
            edge("big", "end"),
            edge("small", "end"),
            edge("other", "end"),
        ],
    )
    flow = await create_flow(root, "router", g)
    for n, expected in (
        (42, {"big": "big 42", "small": None, "other": None, "branch": "big"}),
        (7, {"big": None, "small": "small 7", "other": None, "branch": "small"}),
        (5, {"big": None, "small": None, "other": "other 5", "branch": "else"}),
    ):
        events = await run_flow(root, flow.id, {"n": n})
        assert outputs(events) == expected
        statuses = {
            e.event.node_finished.node_id: e.event.node_finished.status
            for e in events
            if e.event.HasField("node_finished")
        }
        assert sum(s == flow_pb2.NODE_RUN_STATUS_SKIPPED for s in statuses.values()) == 2
        assert statuses["end"] == flow_pb2.NODE_RUN_STATUS_SUCCEEDED


async def test_independent_branches_run_concurrently_and_join(root):
    g = graph(
        [
            start(),
            sleeper("a", 2),
            sleeper("b", 2),
            node("join", "prompt", template="{{a.slept}}+{{b.slept}}"),
            node("end", "end", outputs={"joined": "{{join.text}}"}),
        ],
        [edge("start", "a"), edge("start", "b"), edge("a", "join"), edge("b", "join"), edge("join", "end")],
    )
    flow = await create_flow(root, "parallel", g)
    began = time.perf_counter()
    events = await run_flow(root, flow.id)
    took = time.perf_counter() - began
    assert outputs(events) == {"joined": "2+2"}
    order = [
        (k, getattr(e.event, k).node_id)
        for e, k in zip(events, kinds(events), strict=True)
        if k in ("node_started", "node_finished")
    ]
    # Both branches started before either finished; the join waited for both.
    assert order.index(("node_started", "b")) < order.index(("node_finished", "a"))
    assert order.index(("node_started", "a")) < order.index(("node_finished", "b"))
    assert order.index(("node_started", "join")) > max(
        order.index(("node_finished", "a")), order.index(("node_finished", "b"))
    )
    # Serial would take 4 s of sleeping alone; 1.5 s is left for starting two sandboxes on a loaded machine.
    assert took < 3.5, took


async def test_a_loop_runs_until_its_condition_exits(root):
    g = graph(
        [
            start(),
            node("count", "prompt", template="{{ ((count.text or 0)|int) + 1 }}"),
            node("again", "condition", cases=[{"handle": "more", "expression": "int(count.text) < 4"}]),
            node("end", "end", outputs={"count": "{{count.text}}"}),
        ],
        [edge("start", "count"), edge("count", "again"), edge("again", "count", "more"), edge("again", "end", "else")],
    )
    flow = await create_flow(root, "loop", g)
    events = await run_flow(root, flow.id)
    assert outputs(events) == {"count": "4"}
    attempts = [
        e.event.node_finished.attempt
        for e in events
        if e.event.HasField("node_finished") and e.event.node_finished.node_id == "count"
    ]
    assert attempts == [1, 2, 3, 4]
    run = (await root.flow.GetRun(flow_pb2.GetRunRequest(run_id=events[0].run_id), metadata=root.md)).run
    assert [n.attempt for n in run.nodes if n.node_id == "count"] == [1, 2, 3, 4]


async def test_the_step_limit_ends_a_runaway_loop(root):
    g = graph(
        [
            start(),
            node("spin", "prompt", template="x"),
            node("again", "condition", cases=[{"handle": "more", "expression": "True"}]),
            node("end", "end"),
        ],
        [edge("start", "spin"), edge("spin", "again"), edge("again", "spin", "more"), edge("again", "end", "else")],
    )
    flow = await create_flow(root, "runaway", g)
    events = await run_flow(root, flow.id)
    status = failed_status(events)
    assert reason_of(status) == "RUN_LIMIT_EXCEEDED" and "40 steps" in status.message
    run = (await root.flow.GetRun(flow_pb2.GetRunRequest(run_id=events[0].run_id), metadata=root.md)).run
    assert run.status == flow_pb2.RUN_STATUS_FAILED and reason_of(run.error) == "RUN_LIMIT_EXCEEDED"


async def test_a_failing_node_fails_the_run_with_its_id(root):
    g = chain(start(), node("boom", "code", code="def main():\n    raise ValueError('no luck')"), node("end", "end"))
    flow = await create_flow(root, "failing", g)
    events = await run_flow(root, flow.id)
    status = failed_status(events)
    assert reason_of(status) == "NODE_FAILED" and "ValueError: no luck" in status.message
    failed = [
        e.event.node_finished
        for e in events
        if e.event.HasField("node_finished") and e.event.node_finished.status == flow_pb2.NODE_RUN_STATUS_FAILED
    ]
    assert [n.node_id for n in failed] == ["boom"] and reason_of(failed[0].error) == "NODE_FAILED"


async def test_templates_are_sandboxed(root):
    g = chain(
        start(), node("p", "prompt", template="{{ ''.__class__.__mro__[1].__subclasses__() }}"), node("end", "end")
    )
    flow = await create_flow(root, "sandbox", g)
    status = failed_status(await run_flow(root, flow.id))
    assert reason_of(status) == "NODE_FAILED" and "unsafe" in status.message


async def test_input_form_pauses_the_run_until_resumed(root):
    g = chain(
        start(),
        node(
            "ask",
            "input",
            mode="form",
            prompt="About you",
            fields=[
                {"name": "name", "required": True, "label": "Name"},
                {"name": "age", "type": "FORM_FIELD_TYPE_NUMBER"},
                {"name": "mood", "type": "select", "options": ["good", "bad"]},
            ],
        ),
        node("p", "prompt", template="{{ask.name}} is {{ask.age}} and {{ask.mood}}"),
        node("end", "end", outputs={"text": "{{p.text}}"}),
    )
    flow = await create_flow(root, "form", g)
    events = await run_flow(root, flow.id)
    assert kinds(events)[-1] == "input_required"
    asked = events[-1].event.input_required
    assert asked.node_id == "ask" and asked.prompt == "About you"
    assert [(f.name, f.type, f.required) for f in asked.fields] == [
        ("name", flow_pb2.FORM_FIELD_TYPE_TEXT, True),
        ("age", flow_pb2.FORM_FIELD_TYPE_NUMBER, False),
        ("mood", flow_pb2.FORM_FIELD_TYPE_SELECT, False),
    ]
    run_id = events[0].run_id
    run = (await root.flow.GetRun(flow_pb2.GetRunRequest(run_id=run_id), metadata=root.md)).run
    assert run.status == flow_pb2.RUN_STATUS_WAITING_INPUT and run.pending_input == asked
    assert run.last_seq == events[-1].seq
    waiting = [n for n in run.nodes if n.node_id == "ask"]
    assert waiting[0].status == flow_pb2.NODE_RUN_STATUS_WAITING_INPUT

    for node_id, answer, code, why in (
        ("p", {"name": "Ada"}, grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_WAITING"),
        ("ask", {"age": 3}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ("ask", {"name": "Ada", "age": "old"}, grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("ask", {"name": "Ada", "mood": "meh"}, grpc.StatusCode.INVALID_ARGUMENT, ""),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await resume(root, run_id, node_id, answer)
        assert caught.value.code() == code and (not why or reason(caught.value) == why)

    more = await resume(root, run_id, "ask", {"name": "Ada", "age": 36, "mood": "good"})
    assert more[0].seq == events[-1].seq + 1 and all(m.run_id == run_id for m in more)
    assert kinds(more)[-1] == "run_finished"
    assert outputs(more) == {"text": "Ada is 36 and good"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await resume(root, run_id, "ask", {"name": "Eve"})
    assert reason(caught.value) == "RUN_NOT_WAITING"

    # The whole log replays across the pause, and a follower of a paused run stops at the pause.
    replay = await collect(root.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=run_id), metadata=root.md))
    assert [m.seq for m in replay] == list(range(1, more[-1].seq + 1))
    assert kinds(replay) == kinds(events) + kinds(more)


async def test_an_output_choice_picks_the_branch(root):
    g = graph(
        [
            start(),
            node("menu", "output", template="Tea or coffee?", interaction="choice", options=["tea", "coffee"]),
            node("tea", "prompt", template="brewing tea"),
            node("coffee", "prompt", template="brewing coffee"),
            node(
                "end", "end", outputs={"tea": "{{tea.text}}", "coffee": "{{coffee.text}}", "picked": "{{menu.choice}}"}
            ),
        ],
        [
            edge("start", "menu"),
            edge("menu", "tea", "tea"),
            edge("menu", "coffee", "coffee"),
            edge("tea", "end"),
            edge("coffee", "end"),
        ],
    )
    flow = await create_flow(root, "menu", g)
    events = await run_flow(root, flow.id)
    assert [e.event.token.text for e in events if e.event.HasField("token")] == ["Tea or coffee?"]
    asked = events[-1].event.input_required
    assert asked.node_id == "menu" and list(asked.fields[0].options) == ["tea", "coffee"]
    with pytest.raises(grpc.aio.AioRpcError):
        await resume(root, events[0].run_id, "menu", {"choice": "water"})
    more = await resume(root, events[0].run_id, "menu", {"choice": "coffee"})
    assert outputs(more) == {"tea": None, "coffee": "brewing coffee", "picked": "coffee"}


async def test_stop_ends_a_run_without_waiting_for_its_running_node(root):
    g = chain(start(), sleeper("slow", 30), node("end", "end"))
    flow = await create_flow(root, "slow", g)
    stream = root.flow.RunFlow(flow_pb2.RunFlowRequest(flow_id=flow.id), metadata=root.md)
    seen = []

    async def read():
        async for message in stream:
            seen.append(message)

    reader = asyncio.create_task(read())
    for _ in range(500):
        if any(m.event.HasField("node_started") and m.event.node_started.node_id == "slow" for m in seen):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the code process is up and sleeping
    began = time.perf_counter()
    stopped = (await root.flow.StopRun(flow_pb2.StopRunRequest(run_id=seen[0].run_id), metadata=root.md)).run
    took = time.perf_counter() - began
    await asyncio.wait_for(reader, 15)
    assert took < 10, took  # the node sleeps 30 s: stopped, not waited for
    assert stopped.status == flow_pb2.RUN_STATUS_STOPPED and stopped.HasField("end_time")
    assert [n.status for n in stopped.nodes if n.node_id == "slow"] == [flow_pb2.NODE_RUN_STATUS_STOPPED]
    assert seen[-1].event.run_finished.status == flow_pb2.RUN_STATUS_STOPPED
    # Stopping again is harmless.
    again = (await root.flow.StopRun(flow_pb2.StopRunRequest(run_id=seen[0].run_id), metadata=root.md)).run
    assert again.status == flow_pb2.RUN_STATUS_STOPPED and again.end_time == stopped.end_time


async def test_stopping_a_waiting_run(root):
    flow = await create_flow(root, "wait-stop", chain(start(), node("ask", "input"), node("end", "end")))
    events = await run_flow(root, flow.id)
    stopped = (await root.flow.StopRun(flow_pb2.StopRunRequest(run_id=events[0].run_id), metadata=root.md)).run
    assert stopped.status == flow_pb2.RUN_STATUS_STOPPED
    replay = await collect(
        root.flow.StreamRunEvents(
            flow_pb2.StreamRunEventsRequest(run_id=events[0].run_id, after_seq=events[-1].seq), metadata=root.md
        )
    )
    assert kinds(replay) == ["run_finished"] and replay[0].event.run_finished.status == flow_pb2.RUN_STATUS_STOPPED


async def test_events_can_be_followed_live_and_resumed_from_a_seq(root):
    g = chain(start(), sleeper("slow", 0.5), node("p", "prompt", template="done"), node("end", "end"))
    flow = await create_flow(root, "followed", g)
    stream = root.flow.RunFlow(flow_pb2.RunFlowRequest(flow_id=flow.id), metadata=root.md)
    first = await stream.read()
    run_id = first.run_id
    # A second reader joins while the run goes on, from seq 0; a third from the middle, after the end.
    follower = await collect(
        root.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=run_id), metadata=root.md)
    )
    rest = []
    while (message := await stream.read()) is not grpc.aio.EOF:
        rest.append(message)
    everything = [first, *rest]
    assert [(m.seq, m.event) for m in follower] == [(m.seq, m.event) for m in everything]
    tail = await collect(
        root.flow.StreamRunEvents(flow_pb2.StreamRunEventsRequest(run_id=run_id, after_seq=3), metadata=root.md)
    )
    assert [m.seq for m in tail] == [m.seq for m in everything if m.seq > 3]
    listed = await root.flow.ListRuns(
        flow_pb2.ListRunsRequest(flow_id=flow.id, status=flow_pb2.RUN_STATUS_FINISHED), metadata=root.md
    )
    assert [r.id for r in listed.runs] == [run_id] and listed.runs[0].last_seq == everything[-1].seq


async def test_the_http_node_refuses_loopback_by_default(root):
    for url in ("http://127.0.0.1:9/", "http://localhost:9/x", "http://[::1]:9/", "http://169.254.169.254/latest"):
        g = chain(start(), node("h", "http_request", url=url), node("end", "end"))
        flow = await create_flow(root, f"ssrf {url}", g)
        status = failed_status(await run_flow(root, flow.id))
        assert reason_of(status) == "PERMISSION_DENIED", status
        assert "non-public address" in status.message and status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]


async def test_the_http_node_reaches_allowed_hosts(tmp_path):
    """With the address allowed in settings, the node calls it (through the real node and guard)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse
    from starlette.routing import Route

    from tests.conftest import free_port
    from typecase.server.config import Settings
    from typecase.server.flow.nodes.base import NodeContext, Services
    from typecase.server.flow.nodes.http import HttpGuard, HttpRequest

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {
                "q": request.query_params.get("q"),
                "host": request.headers["host"],
                "method": request.method,
                "body": json.loads(body) if body else None,
            }
        )

    async def hop(request: Request) -> RedirectResponse:
        return RedirectResponse("/echo?q=moved", status_code=302)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/hop", hop, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="off",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    settings = Settings(_env_file=None, data_dir=tmp_path, flow_http_allowed_hosts=["127.0.0.0/8"])
    guard = HttpGuard(settings)
    try:
        ctx = NodeContext(
            node_id="h",
            node_type=flow_pb2.NODE_TYPE_HTTP_REQUEST,
            name="h",
            params={
                "method": "POST",
                "url": f"http://127.0.0.1:{port}/echo",
                "query": {"q": "{{x}}"},
                "body": {"n": "{{x}}"},
                "headers": {"Host": "evil.example"},
            },
            scope={"x": "hi"},
            services=Services(settings, http=guard),
        )
        result = await HttpRequest().run(ctx)
        assert result.outputs["status_code"] == 200
        assert result.outputs["json"] == {"q": "hi", "host": f"127.0.0.1:{port}", "method": "POST", "body": {"n": "hi"}}
        ctx.params = {"method": "POST", "url": f"http://127.0.0.1:{port}/hop", "body": {"n": 1}}
        result = await HttpRequest().run(ctx)  # the redirect is followed (and checked) by hand
        assert result.outputs["json"]["q"] == "moved" and result.outputs["json"]["method"] == "GET"
    finally:
        await guard.aclose()
        server.should_exit = True
        await serving


async def test_code_runs_in_a_limited_process(root):
    ok = chain(
        start("n"),
        node("c", "code", code="def main(n):\n    print('noise')\n    return {'double': n * 2}", inputs={"n": "{{n}}"}),
        node("end", "end", outputs={"d": "{{c.double}}"}),
    )
    flow = await create_flow(root, "code ok", ok)
    assert outputs(await run_flow(root, flow.id, {"n": 21})) == {"d": 42.0}

    cases = {
        "memory": ("def main():\n    block = bytearray(512 * 1024 * 1024)\n    return {}", "MemoryError", {}),
        "cpu": ("def main():\n    while True:\n        pass", "CPU time", {}),
        "wall": ("import time\ndef main():\n    time.sleep(5)\n    return {}", "longer than 0.3s", {"timeout_ms": 300}),
        # New processes are refused by the sandbox's seccomp filter, whichever way they are asked for.
        "fork": ("import os\ndef main():\n    os.fork()\n    return {}", "Operation not permitted", {}),
        "subprocess": (
            "import subprocess\ndef main():\n    subprocess.run(['/bin/true'])\n    return {}",
            "Operation not permitted",
            {},
        ),
    }
    for name, (code, message, extra) in cases.items():
        flow = await create_flow(
            root, f"code {name}", chain(start(), node("c", "code", code=code, **extra), node("end", "end"))
        )
        began = time.perf_counter()
        status = failed_status(await run_flow(root, flow.id))
        assert reason_of(status) == "NODE_FAILED" and message in status.message, (name, status.message)
        # Each ends on its own limit (the message names it), none on the 10 s wall time; under load, one CPU second
        # of the "cpu" case alone can take seconds of wall time.
        assert time.perf_counter() - began < 9, name


async def test_run_inputs_are_checked_against_the_start_node(root):
    g = chain(
        node(
            "start",
            "start",
            variables=[
                {"name": "n", "type": "number", "required": True},
                {"name": "flag", "type": "boolean", "default": False},
            ],
        ),
        node("end", "end", outputs={"n": "{{n}}", "flag": "{{flag}}"}),
    )
    flow = await create_flow(root, "typed inputs", g)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run_flow(root, flow.id, {})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs.n" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError):
        await run_flow(root, flow.id, {"n": "many"})
    assert outputs(await run_flow(root, flow.id, {"n": "3"})) == {"n": 3.0, "flag": False}
    run = (await root.flow.ListRuns(flow_pb2.ListRunsRequest(flow_id=flow.id), metadata=root.md)).runs[0]
    assert to_dict(run)["inputs"] == {"n": 3.0, "flag": False}
