"""The chat side of assistant sessions: a turn whose answer is the agent loop's (server/agent/loop.py).

turns.py runs an assistant turn like any other (its event log, lease, stop and finish) and hands the generation
to `AgentTurn.run`, which maps the loop's events onto the turn: text -> token events, each tool call -> a node
event carrying a ToolStep when it starts and when it ends (the ended ones are the answer's Message.steps, so a
reader resuming with Last-Event-ID and a later ListMessages see the same steps), MAX_STEPS -> its finish reason
and a notice appended to the answer. Stopping the turn cancels the loop, which cancels the tool batch in flight
(their HTTP and MCP requests are closed); the calls it interrupted are recorded as CANCELLED steps.

Later turns see earlier tool calls and results: `history` rewrites each earlier answer as its tool steps (name,
arguments, result preview) followed by its text, and trims the oldest turns' results first when they would not
fit the context budget (then build_prompt drops whole turns, oldest first, as for any session).

Durability: the turn row's request is the loop's prompt, saved when the model asks for tools (its message with the
calls) and when their results are in; its `tools` (the declarations) mark it an agent turn. A replica that takes
the turn over (turns.take_over -> `resume`) continues from that prompt: a call whose end is in the event log is
never run again (its logged preview is its result), a call without one is run again only when its tool is
idempotent (toolbox.idempotent), otherwise the interruption (TOOL_INTERRUPTED) is its result and the model goes on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select

from typecase.server.agent.instructions import system_prompt  # noqa: F401 (chat's service uses it from here)
from typecase.server.agent.loop import (
    AgentLoop,
    AgentSettings,
    Finished,
    Outcome,
    StepCompleted,
    StepStarted,
    TextDelta,
    Toolbox,
    ToolUpdate,
)
from typecase.server.chat import context as ctx
from typecase.server.chat.models import ChatMessageRow
from typecase.server.rpc import principal as caller
from typecase.v1 import assistant_pb2, chat_pb2, common_pb2

TRIMMED = "[result left out: older than the context budget allows]"


class AgentSource(Protocol):
    """What chat uses of assistants and tools (built in agent_wiring.py, passed in by app.py)."""

    async def assistant(self, assistant_id: str) -> assistant_pb2.Assistant: ...

    async def toolbox(self, assistant: assistant_pb2.Assistant) -> Toolbox: ...

    def settings(self, assistant: assistant_pb2.Assistant, model_id: str, user: str) -> AgentSettings: ...


def _summary(steps: list[dict], result_chars: int) -> str:
    lines = []
    for step in steps:
        tool = step.get("tool")
        if not tool:
            continue
        result = str(tool.get("result_preview", ""))[:result_chars] if result_chars else TRIMMED
        lines.append(f"[tool {tool.get('name', '')}({tool.get('arguments', '')}) -> {result}]")
    return "\n".join(lines)


async def history(
    db, session_id: str, turns: list[ctx.HistoryTurn], result_chars: int, room_chars: int
) -> list[ctx.HistoryTurn]:
    """`turns` (the session's recent question/answer pairs, oldest first) with each answer preceded by its tool
    steps; the oldest turns' results are left out first while the steps would take more than `room_chars`."""
    if not turns:
        return turns
    async with db.session() as session:
        rows = (
            await session.execute(
                select(ChatMessageRow.steps)
                .where(
                    ChatMessageRow.session_id == session_id,
                    ChatMessageRow.category == "answer",
                    ChatMessageRow.status.in_(("complete", "stopped")),
                    ChatMessageRow.content != "",
                )
                .order_by(ChatMessageRow.id.desc())
                .limit(len(turns))
            )
        ).all()
    steps = [list(r.steps or []) for r in reversed(rows)]
    steps = [[]] * (len(turns) - len(steps)) + steps[-len(turns) :]
    widths = [result_chars] * len(turns)
    summaries = [_summary(s, result_chars) for s in steps]
    oldest = 0
    while sum(len(s) for s in summaries) > room_chars and oldest < len(turns):
        widths[oldest] = 0
        summaries[oldest] = _summary(steps[oldest], 0)
        oldest += 1
    return [
        ctx.HistoryTurn(t.question, f"{summary}\n\n{t.answer}" if summary else t.answer)
        for t, summary in zip(turns, summaries, strict=True)
    ]


def _cancelled(step: common_pb2.ToolStep) -> common_pb2.ToolStep:
    ended = common_pb2.ToolStep()
    ended.CopyFrom(step)
    ended.status = common_pb2.TOOL_STEP_STATUS_CANCELLED
    ended.reason = "CANCELLED"
    ended.result_preview = "the turn was stopped before the tool answered"
    return ended


INTERRUPTED = (
    "the call was interrupted (the server running it stopped) before it answered, and the tool is not safe to "
    "run twice, so it was not run again"
)


@dataclass
class AgentTurn:
    toolbox: Toolbox
    settings: AgentSettings
    retrieve_first: bool = False  # knowledge searched before the first step (the turn's kb_ids)
    first_step: int = 1
    pending: list[Outcome | None] | None = None  # a taken-over step's calls (see AgentLoop.run)
    principal: caller.Principal | None = None  # bound for a taken-over turn (no caller in the sweep)

    async def run(self, turns, turn) -> None:
        if self.principal is not None:
            caller.bind(self.principal)  # this task's own context
        if self.first_step == 1 and self.pending is None:
            if self.retrieve_first and turn.kb_ids:
                await turns._retrieve(turn)
            elif turns.scratch is not None and turn.scratch:  # attached documents too large for the prompt (scratch.py)
                await turns.scratch.retrieve(turn, turns._emit)
            turn.request.tools.extend(self.toolbox.declarations)
            if turn.request.tools:
                await turns._save_request(turn)
        if turns.llm is None:
            raise RuntimeError("no LLM service is running on this server")
        loop = AgentLoop(turns.llm.generate, self.toolbox, self.settings)
        running: dict[str, common_pb2.ToolStep] = {}
        saving = bool(turn.request.tools)  # no tools: nothing to resume from but the text

        def record(step: common_pb2.ToolStep) -> None:
            event = chat_pb2.NodeEvent(tool=step)
            if step.status != common_pb2.TOOL_STEP_STATUS_RUNNING:
                turn.steps.append(event)
            turns._emit(turn, chat_pb2.TurnEvent(node=event))

        def text(delta: str, reasoning: str = "") -> None:
            if turn.first_token is None:
                turn.first_token = time.perf_counter()
            turn.parts.append(delta)
            turns._emit(turn, chat_pb2.TurnEvent(token=common_pb2.TokenDelta(text=delta, reasoning_text=reasoning)))

        try:
            events = loop.run(list(turn.request.messages), first_step=self.first_step, pending=self.pending)
            async for event in events:
                if isinstance(event, StepStarted) and saving:
                    turn.request.messages.append(event.message)
                    await turns._save_request(turn)
                elif isinstance(event, StepCompleted) and saving:
                    if self.pending is not None and event.number == self.first_step:
                        turn.request.messages.pop()  # the resumed step's message comes back with its results
                        turn.request.messages.extend(event.messages)
                    else:
                        turn.request.messages.extend(event.results)
                    await turns._save_request(turn)
                elif isinstance(event, TextDelta):
                    text(event.text, event.reasoning)
                elif isinstance(event, ToolUpdate):
                    step = event.step
                    if step.status == common_pb2.TOOL_STEP_STATUS_RUNNING:
                        running[step.call_id] = step
                    else:
                        running.pop(step.call_id, None)
                    record(step)
                elif isinstance(event, Finished):
                    turn.finish_reason = event.finish_reason
                    if event.usage.total_tokens:
                        turn.usage = event.usage
                    turn.served_model_id = event.served_model_id or turn.served_model_id
                    if event.notice:
                        text(("\n\n" if turn.content else "") + event.notice)
        except asyncio.CancelledError:
            for step in running.values():
                record(_cancelled(step))
            raise


async def resume(agents: AgentSource, assistant_id: str, turn, events: list[chat_pb2.TurnEvent]) -> None:
    """Make a taken-over turn an agent turn again (turns.take_over): the assistant's toolbox under the turn's
    owner, the loop resumed at the last step the saved prompt holds, tool steps restored from the log."""
    principal = caller.Principal(turn.owner_id, caller.ROLE_USER)
    token = caller.bind(principal)
    try:
        await _resume(agents, assistant_id, turn, events, principal)
    finally:
        caller.bind_reset(token)


async def _resume(agents: AgentSource, assistant_id: str, turn, events, principal) -> None:
    assistant = await agents.assistant(assistant_id)
    toolbox = await agents.toolbox(assistant)
    settings = agents.settings(assistant, turn.request.model_id, turn.owner_id)
    settings.config = turn.request.config
    ended = {
        e.node.tool.call_id: e.node.tool
        for e in events
        if e.HasField("node") and e.node.HasField("tool") and e.node.tool.status != common_pb2.TOOL_STEP_STATUS_RUNNING
    }
    turn.steps.extend(chat_pb2.NodeEvent(tool=step) for step in ended.values())
    messages = list(turn.request.messages)
    last_user = max((i for i, m in enumerate(messages) if m.role == common_pb2.MESSAGE_ROLE_USER), default=0)
    asked = [m for m in messages[last_user + 1 :] if m.role == common_pb2.MESSAGE_ROLE_ASSISTANT and m.tool_calls]
    agent = AgentTurn(toolbox, settings, first_step=len(asked) + 1, principal=principal)
    last = messages[-1] if messages else None
    if last is not None and last.role == common_pb2.MESSAGE_ROLE_ASSISTANT and last.tool_calls:
        agent.first_step = len(asked)
        pending: list[Outcome | None] = []
        for call in last.tool_calls:
            logged = ended.get(call.id)
            if logged is not None:
                pending.append(
                    Outcome(
                        call.id,
                        logged.status == common_pb2.TOOL_STEP_STATUS_SUCCEEDED,
                        logged.result_preview,
                        logged.reason,
                        logged.duration_ms / 1000,
                    )
                )
            elif await toolbox.idempotent(call.name):
                pending.append(None)
            else:
                pending.append(Outcome(call.id, False, INTERRUPTED, "TOOL_INTERRUPTED", cancelled=True))
        agent.pending = pending
    turn.agent = agent
