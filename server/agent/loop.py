"""The agent loop: model call with tools, tool calls executed, results fed back, until a final answer.

One loop serves every agent surface (assistant chat turns, /openai/v1's `assistant:<id>` models, AGENT flow
nodes), so it imports no domain: it receives a `generate` callable (LLMService.generate's shape) and a `Toolbox`
(declarations plus a batch runner, built by the composition root over the tools domain's ToolsApi). It yields
events the surface turns into its own wire format:

    TextDelta        answer text as the model streams it (every step's text, in order)
    ToolUpdate       a ToolStep when a call starts (RUNNING, with its arguments) and when it ends (result preview)
    StepCompleted    a model call and its tool results are done: the messages to append to the prompt, so a
                     surface that logs them can resume the loop at this point (`run(messages, first_step=n+1)`)
    Finished         terminal: finish reason (STOP, LENGTH, MAX_STEPS, ...), the notice for MAX_STEPS, usage

Stopping is cancellation: cancelling the task that iterates `run` cancels the model stream or the tool batch in
flight (ToolsApi.execute closes its HTTP and MCP requests)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from typecase.v1 import common_pb2, llm_pb2

Generate = Callable[[llm_pb2.GenerateRequest], AsyncIterator[llm_pb2.GenerateResponse]]


@dataclass
class Outcome:
    """What one tool call produced (the model is shown `text` whether it succeeded or not)."""

    call_id: str
    ok: bool
    text: str
    reason: str = ""  # a TOOL_* reason when not ok
    seconds: float = 0.0
    tool_id: str = ""
    cancelled: bool = False  # stopped or interrupted rather than failed


OnResult = Callable[[int, Outcome], None]


class Toolbox(Protocol):
    """The tools an agent may call, as the model sees them, and how to run a batch of its calls."""

    declarations: list[llm_pb2.Tool]

    def tool_id(self, name: str) -> str: ...

    async def idempotent(self, name: str) -> bool: ...

    async def run(self, calls: Sequence[llm_pb2.ToolCall], on_result: OnResult | None = None) -> list[Outcome]:
        """Run the calls concurrently; on_result(index, outcome) as each one ends."""
        ...


@dataclass
class TextDelta:
    text: str
    reasoning: str = ""


@dataclass
class ToolUpdate:
    step: common_pb2.ToolStep


@dataclass
class StepStarted:
    """The model asked for tools: its message (with the calls) is final; the calls run next."""

    number: int
    message: llm_pb2.ChatMessage


@dataclass
class StepCompleted:
    number: int
    messages: list[llm_pb2.ChatMessage]  # the assistant message with its tool calls, then one tool message each
    tools: list[common_pb2.ToolStep]  # their final states
    usage: common_pb2.Usage

    @property
    def results(self) -> list[llm_pb2.ChatMessage]:
        return self.messages[1:]


@dataclass
class Finished:
    finish_reason: int  # common_pb2.FinishReason
    text: str  # the final step's text
    usage: common_pb2.Usage
    steps: int  # model calls made
    notice: str = ""  # why the loop ended early (MAX_STEPS), for people
    served_model_id: str = ""


Event = TextDelta | ToolUpdate | StepStarted | StepCompleted | Finished


@dataclass
class AgentSettings:
    model_id: str
    system: str = ""  # rendered instructions
    config: llm_pb2.GenerationConfig = field(default_factory=llm_pb2.GenerationConfig)
    max_steps: int = 8
    first_tool_choice: llm_pb2.ToolChoiceMode = (
        llm_pb2.TOOL_CHOICE_MODE_UNSPECIFIED
    )  # the first step's; later steps are AUTO
    preview_chars: int = 500
    max_result_chars: int = 20_000
    user: str = ""


def add_usage(total: common_pb2.Usage, more: common_pb2.Usage) -> None:
    total.prompt_tokens += more.prompt_tokens
    total.completion_tokens += more.completion_tokens
    total.total_tokens += more.total_tokens


def cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... cut: the result had {len(text)} characters, {limit} are shown]"


def tool_step(call: llm_pb2.ToolCall, number: int, tool_id: str) -> common_pb2.ToolStep:
    return common_pb2.ToolStep(
        call_id=call.id,
        tool_id=tool_id,
        name=call.name,
        arguments=call.arguments,
        step=number,
        status=common_pb2.TOOL_STEP_STATUS_RUNNING,
    )


def ended_step(started: common_pb2.ToolStep, outcome: Outcome, preview_chars: int) -> common_pb2.ToolStep:
    step = common_pb2.ToolStep()
    step.CopyFrom(started)
    step.status = (
        common_pb2.TOOL_STEP_STATUS_SUCCEEDED
        if outcome.ok
        else common_pb2.TOOL_STEP_STATUS_CANCELLED
        if outcome.cancelled
        else common_pb2.TOOL_STEP_STATUS_FAILED
    )
    step.result_preview = outcome.text[:preview_chars]
    step.result_size_bytes = len(outcome.text.encode())
    step.reason = outcome.reason
    step.duration_ms = int(outcome.seconds * 1000)
    return step


def tool_messages(
    calls: Sequence[llm_pb2.ToolCall], outcomes: Sequence[Outcome], text: str, max_result_chars: int
) -> list[llm_pb2.ChatMessage]:
    """The step as prompt messages: the model's message with its calls, then each call's result."""
    messages = [llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_ASSISTANT, content=text, tool_calls=calls)]
    for call, outcome in zip(calls, outcomes, strict=True):
        shown = outcome.text if outcome.ok else f"Error ({outcome.reason or 'TOOL_FAILED'}): {outcome.text}"
        messages.append(
            llm_pb2.ChatMessage(
                role=common_pb2.MESSAGE_ROLE_TOOL,
                tool_call_id=call.id,
                name=call.name,
                content=cut(shown, max_result_chars),
            )
        )
    return messages


class AgentLoop:
    def __init__(self, generate: Generate, toolbox: Toolbox, settings: AgentSettings):
        self.generate = generate
        self.toolbox = toolbox
        self.settings = settings

    def _request(self, messages: Sequence[llm_pb2.ChatMessage], number: int) -> llm_pb2.GenerateRequest:
        s = self.settings
        request = llm_pb2.GenerateRequest(model_id=s.model_id, config=s.config, user=s.user)
        if s.system:
            request.messages.append(llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=s.system))
        request.messages.extend(messages)
        if self.toolbox.declarations:
            request.tools.extend(self.toolbox.declarations)
            if number == 1 and s.first_tool_choice:
                request.tool_choice.mode = s.first_tool_choice
        return request

    async def _model_call(self, request: llm_pb2.GenerateRequest, number: int, state: dict):
        """Stream one model call: yields TextDeltas; fills state with text, calls, finish reason, usage."""
        parts: dict[int, llm_pb2.ToolCall] = {}
        text: list[str] = []
        async for response in self.generate(request):
            if response.served_model_id:
                state["served"] = response.served_model_id
            if response.text or response.reasoning_text:
                text.append(response.text)
                yield TextDelta(response.text, response.reasoning_text)
            for delta in response.tool_calls:
                call = parts.setdefault(delta.index, llm_pb2.ToolCall())
                if delta.id:
                    call.id = delta.id
                if delta.name:
                    call.name = delta.name
                call.arguments += delta.arguments
            if response.finish_reason:
                state["finish"] = response.finish_reason
            if response.HasField("usage"):
                state["usage"] = response.usage
        calls = [parts[i] for i in sorted(parts)]
        for i, call in enumerate(calls):
            call.id = call.id or f"call_{number}_{i}"
            call.arguments = call.arguments or "{}"
        state["text"], state["calls"] = "".join(text), calls

    async def _finish_step(self, number: int, calls, known: Sequence[Outcome | None], text: str):
        """Run the calls whose outcome is not known yet (concurrently), then yield every call's end and the step."""
        s = self.settings
        started = [tool_step(call, number, self.toolbox.tool_id(call.name)) for call in calls]
        to_run = [i for i, outcome in enumerate(known) if outcome is None]
        outcomes = list(known)
        for i, outcome in enumerate(known):  # an interruption recorded at a takeover is announced; a logged end not
            if outcome is not None and outcome.cancelled:
                yield ToolUpdate(ended_step(started[i], outcome, s.preview_chars))
        for i in to_run:
            yield ToolUpdate(started[i])
        if to_run:
            began = time.monotonic()
            done: asyncio.Queue[tuple[int, Outcome]] = asyncio.Queue()
            batch = asyncio.create_task(
                self.toolbox.run([calls[i] for i in to_run], lambda j, o: done.put_nowait((to_run[j], o)))
            )
            getter: asyncio.Future | None = None
            try:
                for _ in to_run:  # each call's end as it comes: logged before the slower ones finish
                    getter = asyncio.ensure_future(done.get())
                    await asyncio.wait({getter, batch}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        batch.result()  # the batch failed: raise its error
                        raise RuntimeError("a tool batch ended without every result")
                    i, outcome = getter.result()
                    if not outcome.seconds:
                        outcome.seconds = time.monotonic() - began
                    outcomes[i] = outcome
                    yield ToolUpdate(ended_step(started[i], outcome, s.preview_chars))
                await batch
            finally:
                if getter is not None and not getter.done():
                    getter.cancel()
                if not batch.done():
                    batch.cancel()
                    await asyncio.gather(batch, return_exceptions=True)
        complete = [outcome for outcome in outcomes if outcome is not None]  # every call has ended by now
        ended = [ended_step(step, outcome, s.preview_chars) for step, outcome in zip(started, complete, strict=True)]
        added = tool_messages(calls, complete, text, s.max_result_chars)
        yield StepCompleted(number, added, ended, common_pb2.Usage())

    async def run(
        self,
        messages: Sequence[llm_pb2.ChatMessage],
        *,
        first_step: int = 1,
        pending: Sequence[Outcome | None] | None = None,
    ) -> AsyncIterator[Event]:
        """Run from `messages` (history, the question and any completed steps; `first_step` counts those).

        Resuming a step whose calls were asked for but not all answered (a turn taken over): `messages` ends with
        the model's message carrying the calls, `first_step` is that step, and `pending` has, per call, the outcome
        already known (logged, or the interruption of a call that may not be repeated) or None to run it."""
        s = self.settings
        prompt = list(messages)
        usage = common_pb2.Usage()
        served = ""
        if pending is not None:
            asked = prompt.pop()
            async for event in self._finish_step(first_step, list(asked.tool_calls), pending, asked.content):
                if isinstance(event, StepCompleted):
                    prompt.extend(event.messages)
                yield event
            first_step += 1
        for number in range(first_step, s.max_steps + 1):
            state: dict = {"finish": common_pb2.FINISH_REASON_UNSPECIFIED, "usage": common_pb2.Usage()}
            async for event in self._model_call(self._request(prompt, number), number, state):
                yield event
            served = state.get("served", served)
            add_usage(usage, state["usage"])
            calls: list[llm_pb2.ToolCall] = state["calls"]
            if not calls:
                finish = state["finish"] or common_pb2.FINISH_REASON_STOP
                if finish == common_pb2.FINISH_REASON_TOOL_CALLS:
                    finish = common_pb2.FINISH_REASON_STOP
                yield Finished(finish, state["text"], usage, number, served_model_id=served)
                return
            if number == s.max_steps:
                notice = (
                    f"Stopped after {s.max_steps} steps without a final answer (the assistant's max steps); the "
                    f"model still wanted to call {', '.join(c.name for c in calls)}."
                )
                yield Finished(common_pb2.FINISH_REASON_MAX_STEPS, state["text"], usage, number, notice, served)
                return
            asked = llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_ASSISTANT, content=state["text"], tool_calls=calls)
            yield StepStarted(number, asked)
            async for event in self._finish_step(number, calls, [None] * len(calls), state["text"]):
                if isinstance(event, StepCompleted):
                    event.usage = state["usage"]
                    prompt.extend(event.messages)
                yield event
        # first_step beyond max_steps: a resumed turn that had already used every step
        yield Finished(
            common_pb2.FINISH_REASON_MAX_STEPS,
            "",
            usage,
            s.max_steps,
            f"Stopped after {s.max_steps} steps without a final answer (the assistant's max steps).",
            served,
        )


def arguments_object(text: str) -> dict:
    """A model's arguments text as an object ({} when it is not one)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
