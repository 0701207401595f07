"""Flow engine overhead per node: a chain of trivial nodes (start, N-2 prompt nodes with constant text, end) run
by the durable engine, beside the same node functions called in a plain loop.

The engine does, per node: scheduling, a node_started and a node_finished event (each appended to the run's
shared event log, then handed to live readers), and a checkpoint in SQL (the run's state and the node's row in one
transaction). The plain loop only calls `await spec.run(ctx)` with the same contexts. The difference is what
durability costs per step.

    .venv/bin/python bench/flow/overhead.py [--nodes 50] [--runs 20] [--database-url URL] [--redis-url URL]

Embedded by default (SQLite file + in-process cache), like `typecase serve` with no configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def chain_graph(nodes: int) -> dict:
    ids = ["start", *[f"n{i}" for i in range(1, nodes - 1)], "end"]
    specs = [{"id": "start", "type": "NODE_TYPE_START"}]
    specs += [{"id": i, "type": "NODE_TYPE_PROMPT", "params": {"template": "ok"}} for i in ids[1:-1]]
    specs.append({"id": "end", "type": "NODE_TYPE_END", "params": {"outputs": {"last": f"{{{{{ids[-2]}.text}}}}"}}})
    edges = [{"id": f"e{k}", "source": a, "target": b} for k, (a, b) in enumerate(zip(ids, ids[1:], strict=False))]
    return {"nodes": specs, "edges": edges}


async def plain_loop(graph, services, runs: int) -> list[float]:
    """Seconds per run: the node functions called one after the other, outputs passed on in a dict."""
    from typecase.server.flow.nodes.base import NodeContext

    order = list(graph.nodes)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        scope: dict = {"sys": {"inputs": {}}}
        for node_id in order:
            node = graph.nodes[node_id]
            ctx = NodeContext(
                node_id=node_id, node_type=node.type, name=node.name, params=node.params, scope=scope, services=services
            )
            result = await node.spec.run(ctx)
            scope[node_id] = result.outputs
        times.append(time.perf_counter() - began)
        assert scope["end"] == {"last": "ok"}
    return times


async def engine_runs(engine, graph, data, runs: int) -> list[float]:
    from typecase.server.flow.models import FlowRunRow
    from typecase.server.infra.sql import new_id

    times = []
    for _ in range(runs):
        row = FlowRunRow(
            id=new_id(),
            flow_id="bench",
            version_id="bench",
            owner_id="bench",
            flow_owner_id="bench",
            session_id="",
            inputs={},
            outputs={},
            graph=data,
        )
        began = time.perf_counter()
        execution = await engine.create(row, graph)
        async for entry in execution.live.read(0):
            if entry.terminal:
                break
        times.append(time.perf_counter() - began)
        assert execution.status == "finished", execution.status
        assert entry.message.event.run_finished.outputs["last"] == "ok"
    return times


def time_checkpoints() -> list[float]:
    """Record how long each step's checkpoint transaction takes (to attribute the overhead)."""
    from typecase.server.flow.engine.runner import Execution

    spent: list[float] = []
    original = Execution._checkpoint
    if getattr(original, "timed", False):
        original = original.original

    async def timed(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    timed.timed, timed.original = True, original
    Execution._checkpoint = timed
    return spent


async def main(args) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from typecase.server.config import Settings
    from typecase.server.flow.engine.manager import Engine
    from typecase.server.flow.graph import Graph, validate
    from typecase.server.flow.nodes.base import Services
    from typecase.server.infra.cache import create_cache
    from typecase.server.infra.schema import migrate
    from typecase.server.infra.sql import create_database

    data_dir = Path(tempfile.mkdtemp(prefix="tc-bench-flow-"))
    settings = Settings(_env_file=None, data_dir=data_dir, flow_max_steps=max(1000, args.nodes * 2))
    db = create_database(args.database_url, data_dir)
    cache = create_cache(args.redis_url, key_prefix="tc-bench-flow:")
    await db.start()
    await cache.start()
    await migrate(db)
    services = Services(settings)
    engine = Engine(db, cache, settings, services)
    await engine.start()
    data = chain_graph(args.nodes)
    graph = Graph.from_dict(data)
    checkpoints = time_checkpoints()
    assert not [p for p in validate(graph) if p.severity == 1], "the bench graph must validate"
    try:
        await plain_loop(graph, services, 3)  # warm up
        await engine_runs(engine, graph, data, 3)
        plain = await plain_loop(graph, services, args.runs)
        checkpoints.clear()
        durable = await engine_runs(engine, graph, data, args.runs)
    finally:
        from typecase.server.flow.engine.runner import Execution

        Execution._checkpoint = Execution._checkpoint.original
        await engine.stop()
        await cache.stop()
        await db.stop()
    per_node_checkpoint = sum(checkpoints) / len(checkpoints) * 1e6
    per_node_plain = statistics.median(plain) / args.nodes * 1e6
    per_node_engine = statistics.median(durable) / args.nodes * 1e6
    result = {
        "plain_us_per_node": per_node_plain,
        "engine_us_per_node": per_node_engine,
        "overhead_us_per_node": per_node_engine - per_node_plain,
        "ratio": per_node_engine / per_node_plain,
        "checkpoint_us": per_node_checkpoint,
    }
    backend = f"{db.dialect} + {cache.name}"
    print(f"flow engine overhead: {args.nodes}-node chain of trivial nodes, median of {args.runs} runs ({backend})")
    print(
        f"  plain loop of node functions   {per_node_plain:10.1f} us/node   "
        f"{statistics.median(plain) * 1000:8.2f} ms/run"
    )
    print(
        f"  durable engine                 {per_node_engine:10.1f} us/node   "
        f"{statistics.median(durable) * 1000:8.2f} ms/run"
    )
    print(f"  overhead                       {result['overhead_us_per_node']:10.1f} us/node")
    print(f"    of which the SQL checkpoint  {per_node_checkpoint:10.1f} us/node (mean)")
    print(f"  ratio engine / plain           {result['ratio']:10.1f}x")
    return result


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: SQLite under a temporary directory")
    parser.add_argument("--redis-url", default=None, help="default: the in-process cache")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
