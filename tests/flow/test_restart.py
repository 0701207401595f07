"""Embedded mode: stopping the server (SIGTERM's path) checkpoints the runs in progress and gives them up; the
next start continues them from their last completed node."""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from tests.flow.conftest import flow_settings
from tests.flow.support import admin, chain, create_flow, node
from typecase.v1 import flow_pb2


async def test_a_restart_continues_the_runs_in_progress(tmp_path):
    from typecase.server.app import App

    data_dir = tmp_path / "data"
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("TYPECASE_"):
                mp.delenv(name)
        first = App(flow_settings(data_dir))
        await first.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel:
                root = admin(channel)
                flow = await create_flow(
                    root,
                    "interrupted",
                    chain(
                        node("start", "start"),
                        node("p", "prompt", template="before"),
                        node(
                            "slow", "code", code="import time\ndef main():\n    time.sleep(0.8)\n    return {'ok': 1}"
                        ),
                        node("end", "end", outputs={"p": "{{p.text}}", "ok": "{{slow.ok}}"}),
                    ),
                )
                stream = root.flow.RunFlow(flow_pb2.RunFlowRequest(flow_id=flow.id), metadata=root.md)
                seen = []
                while not (
                    seen and seen[-1].event.HasField("node_started") and seen[-1].event.node_started.node_id == "slow"
                ):
                    seen.append(await stream.read())
                run_id = seen[0].run_id
                stream.cancel()
        finally:
            await first.stop()  # releases the run mid-node

        second = App(flow_settings(data_dir))
        await second.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{second.grpc_port}") as channel:
                root = admin(channel)
                for _ in range(100):
                    run = (await root.flow.GetRun(flow_pb2.GetRunRequest(run_id=run_id), metadata=root.md)).run
                    if run.status != flow_pb2.RUN_STATUS_RUNNING:
                        break
                    await asyncio.sleep(0.1)
                assert run.status == flow_pb2.RUN_STATUS_FINISHED, run
                assert dict(run.outputs) == {"p": "before", "ok": 1.0}
                # Nodes done before the restart were not run again; the interrupted one was.
                assert [(n.node_id, n.attempt) for n in run.nodes] == [("start", 1), ("p", 1), ("slow", 2), ("end", 1)]
        finally:
            await second.stop()
