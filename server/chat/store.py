"""Group commit for the two writes on every turn's path: claiming a session and inserting the question, answer
and turn rows when a turn starts, and storing the answer and releasing the session when it ends.

Writes queue here and one writer task commits whatever is queued in a single transaction of a few statements
(executemany), however many turns it carries. A lone turn costs what a plain transaction costs; 500 turns
starting at once cost a handful of transactions instead of 500 (SQLite serialises writers, and every statement
is a thread hop through aiosqlite, so one transaction per turn made the last of a burst wait seconds).

A batch that fails is retried one operation at a time, so one bad operation fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, insert, literal, null, select, update

from typecase.server.chat.models import RUNNING, ChatMessageRow, ChatSessionRow, ChatTurnRow

log = logging.getLogger("typecase.chat")

SESSIONS = ChatSessionRow.__table__
MESSAGES = ChatMessageRow.__table__
TURNS = ChatTurnRow.__table__


@dataclass
class Start:
    """Claim `session_id` for `turn_id` (if no turn runs there) and insert the turn's rows."""

    session_id: str
    turn_id: str
    rows_messages: list[dict[str, Any]]
    row_turn: dict[str, Any]
    preview: str
    now: datetime
    future: asyncio.Future | None = None  # -> bool: claimed


@dataclass
class Finish:
    """End `turn_id` (if still running) with `status`, store the answer and release the session."""

    turn_id: str
    session_id: str
    answer_id: str
    status: str
    end_seq: int
    now: datetime
    answer: dict[str, Any]  # column values of the answer message
    preview: str  # "" keeps the session's preview
    title: str = ""  # set as the session title when it has none
    run_id: str = ""  # flow sessions: the run that answered
    flow_version_id: str = ""  # flow sessions: the version that answered (recorded on the session)
    future: asyncio.Future | None = None  # -> bool: ended by this call (False: someone else ended it)


@dataclass
class _Queue:
    starts: list[Start] = field(default_factory=list)
    finishes: list[Finish] = field(default_factory=list)


class TurnStore:
    def __init__(self, writing: Callable[[], AbstractAsyncContextManager[Any]], max_batch: int = 256):
        self.writing = writing  # a write unit of work (serialised on SQLite)
        self.max_batch = max_batch
        self._queue = _Queue()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    def start_writer(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._writer(), name="chat-turn-writer")

    async def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def start(self, op: Start) -> bool:
        return await self._submit(op, self._queue.starts)

    async def finish(self, op: Finish) -> bool:
        return await self._submit(op, self._queue.finishes)

    async def _submit(self, op, queue: list) -> bool:
        if self._task is None or self._task.done():
            return (
                await self._run_batch([op] if isinstance(op, Start) else [], [op] if isinstance(op, Finish) else [])
            )[0]
        op.future = asyncio.get_running_loop().create_future()
        queue.append(op)
        self._wake.set()
        return await asyncio.shield(op.future)  # a caller that goes away does not undo a queued write

    async def _writer(self) -> None:
        while True:
            if self._closing and not (self._queue.starts or self._queue.finishes):
                return
            await self._wake.wait()
            self._wake.clear()
            while self._queue.starts or self._queue.finishes:
                starts, self._queue.starts = self._queue.starts[: self.max_batch], self._queue.starts[self.max_batch :]
                finishes = self._queue.finishes[: self.max_batch]
                self._queue.finishes = self._queue.finishes[self.max_batch :]
                ops = [*starts, *finishes]
                try:
                    results = await self._run_batch(starts, finishes)
                except asyncio.CancelledError:
                    for op in ops:
                        if not op.future.done():
                            op.future.cancel()
                    raise
                except Exception as exc:
                    if len(ops) == 1:
                        ops[0].future.set_exception(exc)
                        continue
                    log.warning("chat: a batch of %d turn writes failed (%s); retrying them one by one", len(ops), exc)
                    for op in ops:
                        try:
                            single = await self._run_batch(*(([op], []) if isinstance(op, Start) else ([], [op])))
                            op.future.set_result(single[0])
                        except Exception as one_exc:
                            op.future.set_exception(one_exc)
                    continue
                for op, result in zip(ops, results, strict=True):
                    if not op.future.done():
                        op.future.set_result(result)

    async def _run_batch(self, starts: list[Start], finishes: list[Finish]) -> list[bool]:
        """One transaction for the batch; results in order (starts, then finishes)."""
        async with self.writing() as session:
            claimed = await self._claim(session, starts) if starts else []
            ended = await self._end(session, finishes) if finishes else []
        return [*claimed, *ended]

    async def _claim(self, session, starts: list[Start]) -> list[bool]:
        S = SESSIONS.c
        await session.execute(
            update(SESSIONS)
            .where(S.id == bindparam("b_sid"), S.active_turn_id.is_(None), S.delete_time.is_(None))
            .values(
                active_turn_id=bindparam("b_tid"),
                message_count=S.message_count + 2,
                latest_message_preview=bindparam("b_preview"),
                latest_message_time=bindparam("b_now"),
                update_time=bindparam("b_now"),
            ),
            [{"b_sid": op.session_id, "b_tid": op.turn_id, "b_preview": op.preview, "b_now": op.now} for op in starts],
        )
        owners = dict(
            (
                await session.execute(select(S.id, S.active_turn_id).where(S.id.in_({op.session_id for op in starts})))
            ).all()
        )
        claimed = [owners.get(op.session_id) == op.turn_id for op in starts]
        mine = [op for op, ok in zip(starts, claimed, strict=True) if ok]
        if mine:
            await session.execute(insert(MESSAGES), [row for op in mine for row in op.rows_messages])
            await session.execute(insert(TURNS), [op.row_turn for op in mine])
        return claimed

    async def _end(self, session, finishes: list[Finish]) -> list[bool]:
        T, M, S = TURNS.c, MESSAGES.c, SESSIONS.c
        await session.execute(
            update(TURNS)
            .where(T.id == bindparam("b_tid"), T.status == RUNNING)
            # (the prompt is kept only while the turn runs, for a replica that may have to continue it)
            .values(
                status=bindparam("b_status"),
                last_seq=bindparam("b_seq"),
                end_time=bindparam("b_now"),
                lease_expire_time=None,
                run_id=bindparam("b_run"),
                request=null(),
            ),
            [
                {"b_tid": op.turn_id, "b_status": op.status, "b_seq": op.end_seq, "b_now": op.now, "b_run": op.run_id}
                for op in finishes
            ],
        )
        states = {
            row.id: (row.status, row.last_seq)
            for row in (
                await session.execute(
                    select(T.id, T.status, T.last_seq).where(T.id.in_([op.turn_id for op in finishes]))
                )
            ).all()
        }
        # Ours when the row now holds exactly what we wrote (a reaper that got there first wrote its own end).
        ended = [states.get(op.turn_id) == (op.status, op.end_seq) for op in finishes]
        mine = [op for op, ok in zip(finishes, ended, strict=True) if ok]
        if mine:
            columns = sorted(mine[0].answer)
            await session.execute(
                update(MESSAGES)
                .where(M.id == bindparam("b_mid"))
                .values({name: bindparam(f"b_{name}", type_=M[name].type) for name in columns}),
                [{"b_mid": op.answer_id, **{f"b_{name}": op.answer[name] for name in columns}} for op in mine],
            )
            await session.execute(
                update(SESSIONS)
                .where(S.id == bindparam("b_sid"), S.active_turn_id == bindparam("b_tid"))
                .values(
                    active_turn_id=None,
                    update_time=bindparam("b_now"),
                    latest_message_time=bindparam("b_now"),
                    latest_message_preview=case(
                        (bindparam("b_preview") == literal(""), S.latest_message_preview),
                        else_=bindparam("b_preview"),
                    ),
                    title=case(
                        ((S.title == literal("")) & (bindparam("b_title") != literal("")), bindparam("b_title")),
                        else_=S.title,
                    ),
                    flow_version_id=case(
                        (bindparam("b_version") == literal(""), S.flow_version_id),
                        else_=bindparam("b_version"),
                    ),
                ),
                [
                    {
                        "b_sid": op.session_id,
                        "b_tid": op.turn_id,
                        "b_now": op.now,
                        "b_preview": op.preview,
                        "b_title": op.title,
                        "b_version": op.flow_version_id,
                    }
                    for op in mine
                ],
            )
        return ended
