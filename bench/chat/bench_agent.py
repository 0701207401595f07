"""Agent turns against plain turns: the server's overhead per agent step.

One in-process App (embedded stores), a scripted fake OpenAI upstream answering at once, and the built-in
`current_time` tool (in-process, so the figure is Typecase's own work, not a tool server's). Runs T plain turns of
an assistant without tools, then T turns of an assistant whose model calls `current_time` K times (one call per
step) before answering, all sequential over gRPC, and prints the mean turn time of each and the cost of one step:
(agent turn - plain turn) / K. A step is one more model call through the LLM service, a tool call through the
tools domain, two tool events logged and read, and the prompt saved for a takeover.

Run: .venv/bin/python bench/chat/bench_agent.py [--turns 30] [--steps 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from tests.assistants.scripted import ScriptedUpstream  # noqa: E402
from typecase.v1 import (  # noqa: E402
    assistant_pb2,
    assistant_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    common_pb2,
    llm_pb2,
    llm_pb2_grpc,
)

KEY = "tc-bench-admin-key-0123456789"
MD = (("authorization", f"Bearer {KEY}"),)


async def turn(chat, session_id: str) -> tuple[float, chat_pb2.TurnEnded]:
    started = time.perf_counter()
    last = None
    async for response in chat.Chat(
        chat_pb2.ChatRequest(session_id=session_id, content="what time is it?"), metadata=MD
    ):
        last = response
    return time.perf_counter() - started, last.event.ended


async def run(turns: int, steps: int) -> dict:
    from typecase.server.app import App
    from typecase.server.config import Settings

    for name in list(os.environ):
        if name.startswith("TYPECASE_"):
            del os.environ[name]
    os.environ["HF_HUB_OFFLINE"] = "1"
    upstream = ScriptedUpstream(tokens=5).start()
    with tempfile.TemporaryDirectory() as tmp:
        app = App(
            Settings(
                _env_file=None,
                data_dir=Path(tmp) / "data",
                grpc_port=0,
                http_port=0,
                admin_api_key=KEY,
                llm_local_enabled=False,
                chat_auto_title=False,
                rate_limit_per_key="1000000/minute",
            )
        )
        await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                llm = llm_pb2_grpc.LLMServiceStub(channel)
                provider = (
                    await llm.CreateProvider(
                        llm_pb2.CreateProviderRequest(
                            provider=llm_pb2.Provider(
                                name="bench",
                                type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
                                base_url=upstream.base_url + "/v1",
                                api_key="sk-bench-0123456789",
                            )
                        ),
                        metadata=MD,
                    )
                ).provider
                model = (
                    await llm.CreateModel(
                        llm_pb2.CreateModelRequest(
                            model=llm_pb2.Model(
                                provider_id=provider.id, name="bench", type=llm_pb2.MODEL_TYPE_LLM, online=True
                            )
                        ),
                        metadata=MD,
                    )
                ).model
                assistants = assistant_pb2_grpc.AssistantServiceStub(channel)
                chat = chat_pb2_grpc.ChatServiceStub(channel)
                sessions = {}
                for name, tools in (("plain", []), ("agent", ["builtin-current_time"])):
                    a = (
                        await assistants.CreateAssistant(
                            assistant_pb2.CreateAssistantRequest(
                                assistant=assistant_pb2.Assistant(
                                    name=name, model_id=model.id, tool_ids=tools, max_steps=steps + 1
                                )
                            ),
                            metadata=MD,
                        )
                    ).assistant
                    sessions[name] = a
                times: dict[str, list[float]] = {"plain": [], "agent": []}
                for i in range(turns + 2):  # the first two of each warm up
                    for name in ("plain", "agent"):
                        s = (
                            await chat.CreateSession(
                                chat_pb2.CreateSessionRequest(session=chat_pb2.Session(assistant_id=sessions[name].id)),
                                metadata=MD,
                            )
                        ).session
                        if name == "agent":
                            upstream.program(*[[{"name": "current_time", "arguments": {}}]] * steps, "answer")
                        else:
                            upstream.program("answer")
                        seconds, ended = await turn(chat, s.id)
                        assert ended.finish_reason == common_pb2.FINISH_REASON_STOP, ended
                        if name == "agent":
                            assert len(ended.answer.steps) == steps, ended.answer.steps
                        if i >= 2:
                            times[name].append(seconds)
        finally:
            await app.stop()
            upstream.stop()
    plain, agent = statistics.mean(times["plain"]), statistics.mean(times["agent"])
    per_step = (agent - plain) / steps
    report = {
        "plain_ms": plain * 1000,
        "agent_ms": agent * 1000,
        "per_step_ms": per_step * 1000,
        "per_step_vs_plain": per_step / plain,
        "turns": turns,
        "steps": steps,
    }
    print(f"plain turn (no tools):       {report['plain_ms']:.1f} ms mean over {turns} turns")
    print(f"agent turn ({steps} tool steps): {report['agent_ms']:.1f} ms")
    print(
        f"one agent step:              {report['per_step_ms']:.1f} ms = {report['per_step_vs_plain']:.2f}x a plain turn"
    )
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.turns, args.steps))


if __name__ == "__main__":
    main()
