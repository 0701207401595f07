"""Nothing an ordinary user supplies computes unbounded on the event loop (issue 18). While a hostile regex,
template or chunking separator runs on a real `typecase serve`, /healthz on its HTTP port keeps answering, and the
hostile input ends within its deadline: a node error that names the limit, or, where the engine is linear-time
(RE2), simply the right answer, quickly.

Everything goes through the REST surface with an ordinary user's token, as an attacker would."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, ServerProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEMPLATE_SECONDS = 1.0  # the server's flow_template_timeout_seconds in these tests
PROBE_INTERVAL_SECONDS = 0.05
BASELINE_SECONDS = 0.5  # probed before the attack and again after it
BLOCKED_SHARE = 1 / 3  # silent over a third of the attack: the loop was held by it
SHORTEST_BLOCK_SECONDS = 0.25  # silences shorter than this are not judged (see HealthProbe)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("unbounded")
    proc = ServerProcess(data_dir, {"TYPECASE_FLOW_TEMPLATE_TIMEOUT_SECONDS": str(TEMPLATE_SECONDS)}).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def user(server) -> dict[str, str]:
    """An ordinary (non-admin) user's authorization header."""
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    body = {"username": "mallory", "password": "correct horse battery", "role": "USER_ROLE_USER"}
    httpx.post(server.http_url + "/v1/users", json=body, headers=admin, timeout=10).raise_for_status()
    login = httpx.post(
        server.http_url + "/v1/auth:login",
        json={"username": "mallory", "password": "correct horse battery"},
        timeout=10,
    )
    login.raise_for_status()
    return {"authorization": f"Bearer {login.json()['access_token']}"}


@dataclass
class HealthProbe:
    """Whether the server's event loop was held while an attack ran, seen from /healthz.

    GET /healthz goes out on a fixed schedule, never waiting for the previous answer, and the time each answer
    arrives is kept. A blocked event loop answers nothing until it is free again, so an attack evaluated on the
    loop leaves a silence (no answer arriving) as long as the evaluation: most of the attack as the client sees it
    (the 1 s template deadline, seconds of backtracking). A loaded machine answers late but steadily: answers keep
    coming at whatever pace the server gets CPU for. Latency is not judged: with probes on a fixed schedule, a
    server answering slower than they are sent builds a queue, and latency grows with the machine's load (a p99
    check of this kind failed at load ~7 with no attack on the loop).

    This client can stall too (on a 2-core machine at load 13 its own loop was seen asleep for 1 s): answers that
    arrive meanwhile are seen late, and probes due meanwhile are not sent. So a silence counts only the time this
    client was awake, which the probe schedule measures (a wake-up later than its interval is time asleep).

    The attack fails the check when its longest silence is over BLOCKED_SHARE of its duration and longer than both
    SHORTEST_BLOCK_SECONDS and the longest silence of the baseline windows probed just before and after it (the
    same machine under the same load, no attack). The floors keep an attack that ends within a few probe
    intervals (RE2, the string cap) from being judged by one late answer: it cannot have held the loop for long.
    Evaluated on the loop, the nested-range template failed it in every run: silent 861-1,093 ms of attacks of
    1,174-2,136 ms at load 9-12; evaluated in its worker, silences stayed under 170 ms at load 7-12."""

    url: str
    arrivals: list[float] = field(default_factory=list)  # when each answer arrived (perf_counter)
    wakes: list[float] = field(default_factory=list)  # when the probe schedule woke this client

    async def __aenter__(self) -> HealthProbe:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())
        self.probe_start = time.perf_counter()
        await asyncio.sleep(BASELINE_SECONDS)
        self.attack_start = time.perf_counter()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.attack_end = time.perf_counter()
        await asyncio.sleep(BASELINE_SECONDS)
        self.probe_end = time.perf_counter()
        self._stop.set()
        await self._task

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=50)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            probes = []
            start = time.perf_counter()
            for i in range(1_000_000):
                await asyncio.sleep(max(0.0, start + i * PROBE_INTERVAL_SECONDS - time.perf_counter()))
                self.wakes.append(time.perf_counter())
                if self._stop.is_set():
                    break
                probes.append(asyncio.create_task(self._probe(client)))
            await asyncio.gather(*probes)

    async def _probe(self, client: httpx.AsyncClient) -> None:
        response = await client.get(self.url)
        assert response.status_code == 200
        self.arrivals.append(time.perf_counter())

    def asleep(self, start: float, end: float) -> float:
        """How long this client slept between `start` and `end`: its wake-ups' lateness past the interval."""
        slept = 0.0
        for earlier, later in zip(self.wakes, self.wakes[1:], strict=False):
            if later > start and earlier < end:
                slept += max(0.0, min(later, end) - max(earlier, start) - PROBE_INTERVAL_SECONDS)
        return slept

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time between `start` and `end` in which no answer arrived while this client was awake."""
        moments = [start, *sorted(at for at in self.arrivals if start < at < end), end]
        return max(
            later - earlier - self.asleep(earlier, later) for earlier, later in zip(moments, moments[1:], strict=False)
        )

    def check(self, what: str) -> None:
        duration = self.attack_end - self.attack_start
        silence = self.longest_silence(self.attack_start, self.attack_end)
        baseline = max(
            self.longest_silence(self.probe_start, self.attack_start),
            self.longest_silence(self.attack_end, self.probe_end),
        )
        print(
            f"{what}: attack {duration * 1000:.0f} ms, longest /healthz silence {silence * 1000:.0f} ms "
            f"(baseline {baseline * 1000:.0f} ms; this client asleep "
            f"{self.asleep(self.attack_start, self.attack_end) * 1000:.0f} ms of the attack)"
        )
        blocked = silence > BLOCKED_SHARE * duration and silence > max(SHORTEST_BLOCK_SECONDS, baseline)
        assert not blocked, (
            f"/healthz was silent for {silence * 1000:.0f} ms of the {duration * 1000:.0f} ms of {what} "
            f"(baseline silence {baseline * 1000:.0f} ms): the attack held the event loop"
        )


async def create_flow(server, user, flow: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=server.http_url, headers=user, timeout=120) as client:
        created = await client.post("/v1/flows", json=flow)
        assert created.status_code == 200, created.text
        return created.json()["flow"]["id"]


async def run_flow(server, user, flow_id: str, inputs: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Run the flow; return the last event of the run and the run's wall time."""
    async with httpx.AsyncClient(base_url=server.http_url, headers=user, timeout=120) as client:
        started = time.perf_counter()
        lines = []
        async with client.stream("POST", f"/v1/flows/{flow_id}:run", json={"inputs": inputs}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.strip():
                    lines.append(json.loads(line))
        return lines[-1], time.perf_counter() - started


def node(node_id: str, kind: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": f"NODE_TYPE_{kind.upper()}", "name": node_id, "params": params}


def edge(source: str, target: str, handle: str = "") -> dict[str, Any]:
    return {"id": f"{source}-{target}-{handle}", "source": source, "target": target, "source_handle": handle}


def template_flow(name: str, template: str) -> dict[str, Any]:
    nodes = [
        node("start", "start"),
        node("p", "prompt", template=template),
        node("end", "end", outputs={"text": "{{p.text}}"}),
    ]
    return {"name": name, "graph": {"nodes": nodes, "edges": [edge("start", "p"), edge("p", "end")]}}


def failed_node_message(event: dict[str, Any]) -> str:
    failed = event["result"]["event"].get("run_failed")
    assert failed, f"the run did not fail: {event}"
    return failed["message"]


async def test_a_catastrophic_regex_in_a_condition_is_answered_in_linear_time(server, user):
    flow = {
        "name": "redos",
        "graph": {
            "nodes": [
                node("start", "start", variables=[{"name": "text", "type": "text"}]),
                node(
                    "c",
                    "condition",
                    cases=[
                        {"handle": "yes", "conditions": [{"left": "{{text}}", "op": "matches", "right": "^(a+)+$"}]}
                    ],
                ),
                node("end", "end", outputs={"branch": "{{c.branch}}"}),
            ],
            "edges": [edge("start", "c"), edge("c", "end", "yes"), edge("c", "end", "else")],
        },
    }
    flow_id = await create_flow(server, user, flow)
    async with HealthProbe(server.http_url + "/healthz") as probe:
        last, seconds = await run_flow(server, user, flow_id, {"text": "a" * 27 + "!"})
    probe.check("a catastrophic regex condition")
    finished = last["result"]["event"].get("run_finished")
    assert finished and finished["outputs"] == {"branch": "else"}, last
    assert seconds < 10  # Python's re: minutes (loose for a loaded CI machine)


@pytest.mark.parametrize(
    "name, template, limit",
    [
        (
            "nested-range",
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            "flow_template_timeout_seconds",
        ),
        (
            "concatenation",
            '{% set ns = namespace(s="x") %}{% for i in range(28) %}{% set ns.s = ns.s ~ ns.s %}'
            "{% endfor %}{{ ns.s|length }}",
            "flow_template_max_string_chars",
        ),
    ],
)
async def test_a_hostile_template_fails_its_node_within_the_deadline_naming_the_limit(
    server, user, name, template, limit
):
    flow_id = await create_flow(server, user, template_flow(name, template))
    async with HealthProbe(server.http_url + "/healthz") as probe:
        last, seconds = await run_flow(server, user, flow_id, {})
    probe.check(f"a {name} template")
    message = failed_node_message(last)
    assert limit in message, message
    assert seconds < TEMPLATE_SECONDS + 8  # unbounded: minutes (loose for a loaded CI machine)


async def test_a_catastrophic_chunking_separator_is_answered_in_linear_time(server, user):
    async with httpx.AsyncClient(base_url=server.http_url, headers=user, timeout=120) as client:
        kb = await client.post("/v1/knowledge-bases", json={"name": "redos"})
        assert kb.status_code == 200, kb.text
        async with HealthProbe(server.http_url + "/healthz") as probe:
            started = time.perf_counter()
            preview = await client.post(
                f"/v1/knowledge-bases/{kb.json()['knowledge_base']['id']}:preview-chunks",
                json={"text": "a" * 27 + "!", "chunking_rule": {"separators": ["(a+)+$"]}},
            )
            seconds = time.perf_counter() - started
    probe.check("a catastrophic chunking separator")
    assert preview.status_code == 200, preview.text
    assert [c["text"] for c in preview.json()["chunks"]] == ["a" * 27 + "!"]
    assert seconds < 10  # Python's re: minutes (loose for a loaded CI machine)
