"""Leased tasks: work held by one replica under a lease on its database row, whose events go through a shared log.

Chat turns and flow runs are both such tasks; this engine is the one copy of what keeps them correct across
replicas, so that a fix lands once. The domain supplies only what differs (a `LeaseHolder`): its row model, how to
stop, abandon and continue one of its tasks, its stored replay and what a reader does when the log goes quiet.

- The row is the truth: a running task's row names the replica holding it and when that lease ends; the holding
  replica renews it every heartbeat. A renewal that finds the row no longer running here (ended or claimed by
  another replica while this one missed its lease) abandons the local task.
- A running row whose lease lapsed lost its replica. The periodic sweep (and readers, and waiters) hand it to the
  domain (`pick_up`): continue it (take-over) or end it (reap), each by a compare-and-set on the row.
- Stop: the replica holding the task stops it; any other writes a stop key and publishes the id on one bus channel
  every replica listens to. Holders also poll the stop keys of their tasks each heartbeat, in case a publish was
  missed while their subscription reconnected.
- Events: a task emits into its outbox; one writer per task moves each entry to the shared log (eventlog.py), and
  only then to the task's live log, which this replica's readers follow. So a replica delivers an event only after
  it is in the shared log: a reader that resumes on another replica finds everything it has seen. An entry with
  no message (`CLOSED`) ends the live log without being logged: the task left this replica (released at
  shutdown) and its readers go on with the shared log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import or_, select, update

from typecase.server.infra.cache import Cache, listen_forever
from typecase.server.infra.eventlog import Entry, EventLog, LiveLog
from typecase.server.infra.sql import Database, utcnow

log = logging.getLogger("typecase.leases")

RUNNING = "running"

# Ends a live log without being logged: the task left this replica; its readers go on with the shared log.
CLOSED = Entry(0, b"", True, None)


class Leased(Protocol):
    """What the engine uses of a task running on this replica."""

    outbox: LiveLog  # emitted, not yet in the shared log
    live: LiveLog  # in the shared log: what this replica's readers see
    task: asyncio.Task | None
    writer: asyncio.Task | None
    finishing: bool  # its end is being stored: no more renewals, stops or abandons
    ended: asyncio.Event


T = TypeVar("T", bound=Leased)
T_contra = TypeVar("T_contra", bound=Leased, contravariant=True)


class LeaseHolder(Protocol[T_contra]):
    """What a domain supplies to the engine."""

    def stop_local(self, task: T_contra) -> bool:
        """Stop a task running here (a stop request). False when it is already ending."""

    def abandon(self, task: T_contra) -> None:
        """The task's row is no longer held by this replica: end the task quietly, writing nothing."""

    async def pick_up(self, task_id: str) -> bool:
        """A running row whose lease lapsed, found by the sweep: continue it or end it. True when handled."""


@dataclass(frozen=True)
class LeaseSettings:
    """The timings of one kind of leased task (from the domain's settings)."""

    lease_seconds: float
    heartbeat_seconds: float  # renewal period (well under lease_seconds)
    sweep_seconds: float  # how often lapsed leases are looked for
    sweep_batch: int  # lapsed rows handled per sweep
    timeout_seconds: float  # a task's longest run: how long a stop key waits for it, and its log while it runs
    log_ttl_seconds: float  # the shared log's life after the task ended
    follow_poll_seconds: float  # a reader's wait on a quiet log before it looks at the row


class LeasedTasks(Generic[T]):
    """The tasks of one kind (keys under `prefix`, e.g. "chat:turn") on this replica."""

    def __init__(
        self,
        db: Database,
        cache: Cache,
        *,
        name: str,
        prefix: str,
        model: Any,
        settings: LeaseSettings,
        holder: LeaseHolder[T],
        replica: str | None = None,
        serialize_sqlite_writes: bool = False,
        on_renew: Callable[[Any, list[T]], Awaitable[None]] | None = None,
        to_shared: Callable[[Entry], Entry] | None = None,
    ):
        """`on_renew(session, tasks)` runs in the unit of work that renewed the leases of `tasks` (e.g. to store
        their progress with it); `to_shared(entry)` is the entry as the shared log keeps it (another object when
        it differs from the live one: a pause that ends live readers but not the log)."""
        self.db = db
        self.cache = cache
        self.name = name
        self.prefix = prefix
        self.model = model
        self.settings = settings
        self.holder = holder
        self.on_renew = on_renew
        self.to_shared = to_shared or (lambda entry: entry)
        self.replica = (replica or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}")[:128]
        self.stop_channel = f"{prefix}-stops"
        self.log = EventLog(
            cache,
            ttl_seconds=settings.log_ttl_seconds,
            running_ttl_seconds=settings.timeout_seconds + settings.log_ttl_seconds,
            key=self.stream_key,
        )
        self.local: dict[str, T] = {}
        self.stop_listener_ready = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        # SQLite allows one writer at a time and makes the others sleep-poll for the lock (holding pooled
        # connections meanwhile); queueing writers here instead keeps starts fast under load.
        self._sqlite_writer = asyncio.Lock() if serialize_sqlite_writes and db.dialect == "sqlite" else None

    def stream_key(self, task_id: str) -> str:
        return f"{self.prefix}:{task_id}:events"

    def stop_key(self, task_id: str) -> str:
        return f"{self.prefix}:{task_id}:stop"

    @asynccontextmanager
    async def writing(self):
        """A unit of work that writes (serialized on SQLite when asked for)."""
        if self._sqlite_writer is None:
            async with self.db.session() as session:
                yield session
            return
        async with self._sqlite_writer:
            async with self.db.session() as session:
                yield session

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._listen_for_stops(), name=f"{self.name}-stop-listener"),
            asyncio.create_task(self._heartbeat(), name=f"{self.name}-heartbeat"),
        ]
        try:  # stops published from now on reach this replica
            await asyncio.wait_for(self.stop_listener_ready.wait(), 10)
        except TimeoutError:
            log.warning(
                "%s: the stop listener is not subscribed yet; stops will be found by polling meanwhile", self.name
            )

    async def settle(self, tasks: list[T]) -> None:
        """Wait (briefly) for `tasks` to end and for their last events to reach the shared log."""
        running = [t.task for t in tasks if t.task is not None]
        if running:
            await asyncio.wait(running, timeout=5)
        writers = [t.writer for t in tasks if t.writer is not None and not t.writer.done()]
        if writers:
            await asyncio.wait(writers, timeout=2)

    async def close(self) -> None:
        """End the background loops and what is left of the background tasks."""
        leftovers = [t for t in self._background if not t.done()]
        for task in [*self._loops, *leftovers]:
            task.cancel()
        await asyncio.gather(*self._loops, *leftovers, return_exceptions=True)

    def spawn(self, coro, name: str) -> asyncio.Task:
        """A background task, cancelled at close."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def launch(self, task_id: str, task: T, run: Coroutine[Any, Any, None], name: str) -> T:
        """Run `task` here: register it, start its log writer, then its body."""
        self.local[task_id] = task
        task.writer = self.spawn(self._write_log(task_id, task), f"{self.name}-log-{task_id}")
        task.task = asyncio.create_task(run, name=name)
        return task

    # -- events ----------------------------------------------------------------------------------------------
    async def _write_log(self, task_id: str, task: T) -> None:
        """Move the task's events from its outbox to the shared log, then to its live log, in order (a task of its
        own, so that stopping the work never interrupts a write half-way)."""
        key = self.stream_key(task_id)
        first = True
        async for entry in task.outbox.read(task.outbox.first_seq - 1):
            if entry.message is None:  # CLOSED
                task.live.append(entry)
                return
            shared = self.to_shared(entry)
            for attempt in range(3):
                try:
                    await self.log.append(task_id, shared)
                    if first and entry.seq != 1:  # a continued log: make sure it expires
                        await self.cache.expire(key, self.log.running_ttl)
                    if shared is not entry:  # ends the live readers, not the log (a pause): expire like an end
                        await self.cache.expire(key, self.log.ttl)
                    first = False
                    break
                except Exception as exc:
                    if attempt == 2:  # readers here still get it; readers elsewhere will miss it
                        log.warning("%s: event %d of %s not logged: %s", self.name, entry.seq, task_id, exc)
                    else:
                        await asyncio.sleep(0.05 * (attempt + 1))
            task.live.append(entry)

    async def append_quietly(self, task_id: str, entry: Entry) -> None:
        """Log an entry made off the task (a reap's end), logging a failure instead of raising it."""
        try:
            await self.log.append(task_id, entry)
        except Exception as exc:
            log.warning("%s: could not log event %d of %s: %s", self.name, entry.seq, task_id, exc)

    async def follow(
        self,
        row: Any,
        after_seq: int,
        *,
        on_idle: Callable[[Any, int], Awaitable[Entry | None]],
        stored_replay: Callable[[Any, int], Awaitable[list[Entry]]],
        stop_after: Callable[[Any, Entry], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[Entry]:
        """The task's events after `after_seq`, then live ones until it ends.

        From the live log when the task runs here (and the live log goes back far enough: a continued task's
        starts late), else from the shared log; a task ended whose log is gone gets `stored_replay(row, after)`.
        `on_idle(row, last_seq)` runs when the shared log is quiet (see EventLog.read); `stop_after(row, entry)`,
        after each shared entry, may end the read early (e.g. at a pause).
        """
        task = self.local.get(row.id)
        if task is not None and after_seq >= task.live.first_seq - 1:
            async for entry in task.live.read(after_seq):
                if entry.message is None:
                    break  # CLOSED: the task left this replica, go on with the shared log
                after_seq = entry.seq
                yield entry
            else:
                return
            row = await self.get_row(row.id) or row
        if row.status != RUNNING and not await self.cache.xrange(self.stream_key(row.id), count=1):
            for entry in await stored_replay(row, after_seq):
                yield entry
            return

        async def idle(last_seq: int) -> Entry | None:
            return await on_idle(row, last_seq)

        async for entry in self.log.read(row.id, after_seq, self.settings.follow_poll_seconds, idle):
            yield entry
            if stop_after is not None and await stop_after(row, entry):
                return

    # -- rows ------------------------------------------------------------------------------------------------
    async def get_row(self, task_id: str) -> Any:
        async with self.db.session() as session:
            return await session.get(self.model, task_id)

    def lapsed(self, row: Any) -> bool:
        """Whether a row is running under a lease nobody renews (not held here, lease over)."""
        return (
            row.status == RUNNING
            and row.id not in self.local
            and (row.lease_expire_time is None or row.lease_expire_time < utcnow())
        )

    def lease_end(self) -> Any:
        return utcnow() + timedelta(seconds=self.settings.lease_seconds)

    # -- stopping --------------------------------------------------------------------------------------------
    async def stop_elsewhere(self, task_id: str) -> None:
        """Ask the replica holding a task (not this one) to stop it."""
        await self.cache.set(self.stop_key(task_id), "1", ttl=self.settings.timeout_seconds)
        await self.cache.publish(self.stop_channel, task_id)

    async def stop_asked(self, task_id: str) -> bool:
        return bool(await self.cache.get(self.stop_key(task_id)))

    async def wait_ended(self, task_id: str, timeout: float, reap: Callable[[str], Awaitable[Any]]) -> bool:
        """Wait until the task no longer runs; a lapsed one is ended with `reap(task_id)` here."""
        deadline = time.monotonic() + timeout
        task = self.local.get(task_id)
        if task is not None:
            try:
                await asyncio.wait_for(task.ended.wait(), timeout)
                return True
            except TimeoutError:
                return False
        delay = 0.005
        while time.monotonic() < deadline:
            row = await self.get_row(task_id)
            if row is None or row.status != RUNNING:
                return True
            if self.lapsed(row):
                await reap(task_id)
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return False

    async def _listen_for_stops(self) -> None:
        def stop(task_id: str) -> None:
            task = self.local.get(task_id)
            if task is not None:
                self.holder.stop_local(task)

        await listen_forever(
            self.cache, self.stop_channel, stop, self.stop_listener_ready, f"{self.name} stop listener"
        )

    # -- liveness --------------------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        next_sweep = 0.0
        while True:
            try:
                await self.renew()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.sweep_seconds
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("%s: heartbeat failed", self.name, exc_info=True)
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def renew(self) -> None:
        """Extend the leases of the tasks held here; abandon those whose row is no longer held here (ended, or
        claimed by another replica); stop those with a stop key."""
        held = [(task_id, task) for task_id, task in self.local.items() if not task.finishing]
        if not held:
            return
        ids = [task_id for task_id, _ in held]
        M = self.model
        async with self.writing() as session:
            renewed = await session.execute(
                update(M)
                .where(M.id.in_(ids), M.status == RUNNING, M.replica == self.replica)
                .values(lease_expire_time=self.lease_end())
            )
            if renewed.rowcount < len(ids):
                # Lost: rows ended or held by another replica. A task without a row yet is not lost: it is
                # registered here before the unit of work that inserts its row commits (a stop must find it).
                rows = await session.execute(select(M.id, M.status, M.replica).where(M.id.in_(ids)))
                lost = {row.id for row in rows if row.status != RUNNING or row.replica != self.replica}
                for task_id, task in held:
                    if task_id in lost and not task.finishing:
                        log.warning(
                            "%s: %s was ended or continued elsewhere while running here (this replica missed its "
                            "lease); abandoning it",
                            self.name,
                            task_id,
                        )
                        self.holder.abandon(task)
            if self.on_renew is not None:
                await self.on_renew(session, [task for _, task in held])
        for task_id, task in held:  # stops published while the listener was reconnecting
            if not task.finishing and await self.stop_asked(task_id):
                self.holder.stop_local(task)

    async def sweep(self) -> int:
        """Hand the running rows whose lease lapsed to the holder; returns how many it handled."""
        M = self.model
        async with self.db.session() as session:
            lapsed = list(
                await session.scalars(
                    select(M.id)
                    .where(M.status == RUNNING, or_(M.lease_expire_time.is_(None), M.lease_expire_time < utcnow()))
                    .limit(self.settings.sweep_batch)
                )
            )
        count = 0
        for task_id in lapsed:
            if task_id in self.local:
                continue
            try:
                if await self.holder.pick_up(task_id):
                    count += 1
            except Exception:
                log.exception("%s: could not pick up %s", self.name, task_id)
        if count:
            log.warning("%s: picked up %d tasks left running by a replica that stopped", self.name, count)
        return count


__all__ = ["CLOSED", "RUNNING", "LeaseHolder", "LeaseSettings", "Leased", "LeasedTasks"]
