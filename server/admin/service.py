"""AdminService: proxy statistics and errors, runtime configuration, restart, logs and the audit trail.

The servicer also owns the LLM API proxy listener (started in `start()` when proxy_enabled), because the proxy's
configuration, statistics and logs are what this service administers. Every RPC requires an admin. Who may use the
proxy is proxy/access.py's concern; a configuration that would open it to anyone is refused at start and on
update. Over 600 lines on purpose: one servicer's RPCs, each short and self-contained; what crosses processes lives
in proxy/shared.py (stats of every worker) and logship.py (their log lines).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2
from sqlalchemy import func, select

from typecase.server.admin.config_store import (
    EDITABLE,
    RESET,
    ConfigInvalid,
    EntryView,
    RuntimeConfig,
    mask,
    to_text,
)
from typecase.server.admin.loghistory import HistoryWriter
from typecase.server.admin.logship import LogShipper
from typecase.server.admin.logstream import INFO, WARNING, LogFiles, LogFilter, LogHub, LogLine
from typecase.server.infra.audit import AuditEventRow, AuditLog
from typecase.server.infra.cache import Cache
from typecase.server.infra.http import AiohttpTransport
from typecase.server.infra.stopping import cancel_and_wait
from typecase.server.proxy.access import KeyVerifier, is_loopback, open_access_problem
from typecase.server.proxy.forward import SOURCE_PROXY, ProxyApp, ProxyConfig
from typecase.server.proxy.listener import ProxyListener
from typecase.server.proxy.shared import SharedStats, StatsView
from typecase.server.proxy.stats import Aggregate, RequestStats, percentile
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import from_timestamp, to_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.server.rpc.ports import Users
from typecase.v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger("typecase.proxy")
LOGGER = "typecase.admin"
LOG_DIR = "logs"
MAX_RECENT = 1000
MAX_ERRORS_PAGE = 500
DEFAULT_LOGS_PAGE, MAX_LOGS_PAGE = 100, 1000
MAX_RESTART_DELAY = 3600.0
_OUTCOME_CODES = {
    "ok": code_pb2.OK,
    "denied": code_pb2.PERMISSION_DENIED,
    "throttled": code_pb2.RESOURCE_EXHAUSTED,
    "failed": code_pb2.INTERNAL,
    "invalid": code_pb2.INVALID_ARGUMENT,
}


class ConfigError(TypecaseError):
    """CONFIG_INVALID with google.rpc.BadRequest naming each rejected key."""

    def __init__(self, problems: dict[str, str]):
        keys = ", ".join(sorted(problems))
        super().__init__(
            grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID", f"invalid configuration: {keys}", {"keys": keys}
        )
        self.problems = problems

    def to_status(self):
        status = super().to_status()
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f"values[{key}]", description=problem)
                for key, problem in sorted(self.problems.items())
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
        return status


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _stamp(epoch: float) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(epoch * 1e9))
    return t


def _epoch(message, field: str) -> float | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToNanoseconds() / 1e9


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        settings,
        *,
        audit: AuditLog,
        auth: Users | None = None,
        request_restart=None,
        proxy_keys: KeyVerifier | None = None,
        cache: Cache | None = None,
    ):
        """`auth`: the auth domain's users (usernames for audit events); `request_restart`: the App's graceful
        re-exec (RestartServer fails with UNAVAILABLE without it); `proxy_keys`: checks the proxy's access keys
        (the proxy does not start without it unless proxy_access_keys is off); `cache`: only when shared through
        Redis (resources.py decides), the cache through which stats and log lines of every process are shown
        (proxy/shared.py, logship.py)."""
        self.settings = settings
        self.proxy_keys = proxy_keys
        self.audit = audit
        self.db = audit.db
        self.auth = auth
        self.request_restart = request_restart
        self.runtime = RuntimeConfig(settings)
        self.stats = RequestStats(
            settings.proxy_recent_requests, settings.proxy_recent_errors, settings.proxy_stats_max_keys
        )
        self.logs = LogHub(
            LogFiles(settings.data_dir / LOG_DIR, settings.proxy_log_file_max_bytes, settings.proxy_log_file_count),
            subscriber_queue=settings.proxy_log_subscriber_queue,
            flush_seconds=settings.proxy_log_flush_seconds,
            capture_level=settings.proxy_log_capture_level,
            replay_max_lines=settings.proxy_log_replay_max_lines,
        )
        self.shared_stats: SharedStats | None = None
        if cache is not None and settings.proxy_stats_share_seconds > 0:
            self.shared_stats = SharedStats(cache, self.stats, settings.proxy_stats_share_seconds)
        if cache is not None and settings.proxy_log_share_seconds > 0:
            self.logs.shipper = LogShipper(cache, self.logs.deliver)
            self.logs.history = HistoryWriter(self.logs.files, settings.proxy_log_history_wait_seconds)
            self.logs.flush_seconds = min(self.logs.flush_seconds, settings.proxy_log_share_seconds)
        self.proxy: ProxyApp | None = None
        self.proxy_port: int | None = None
        self._listen_host = ""
        self._listener: ProxyListener | None = None
        self._transport: AiohttpTransport | None = None
        self._reloader: asyncio.Task | None = None
        self._update_lock = asyncio.Lock()
        self._restart_handle: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.runtime.load, True)
        self._apply_live()
        await self.logs.start()
        v = self.runtime.values()
        if v["proxy_enabled"]:
            try:
                self._check_access_policy(v)
            except BaseException:
                await self.logs.stop()
                raise
            self._listen_host = v["proxy_host"]
            self._transport = AiohttpTransport(
                max_connections=v["proxy_max_connections"], keepalive_expiry=v["proxy_keepalive_expiry_seconds"]
            )
            self.proxy = ProxyApp(
                ProxyConfig.from_values(v, self._listen_host), self._transport, self.stats, self.logs, self.proxy_keys
            )
            self._listener = ProxyListener(
                self.proxy,
                v["proxy_host"],
                v["proxy_port"],
                client_keepalive=v["proxy_client_keepalive_seconds"],
                max_connections=v["proxy_max_client_connections"],
                grace=self.settings.shutdown_grace_seconds,
                max_header_bytes=v["proxy_max_header_bytes"],
                max_header_count=v["proxy_max_header_count"],
                reuse_port=self.settings.reuse_port,
            )
            try:
                await self._listener.start()
            except BaseException:
                await self._transport.aclose()
                await self.logs.stop()
                raise
            self.proxy_port = self._listener.port
            log.info(
                "LLM API proxy listening on %s:%s, forwarding to %s",
                v["proxy_host"],
                self.proxy_port,
                v["proxy_target_base_url"],
            )
        if self.settings.proxy_config_reload_seconds > 0:
            self._reloader = asyncio.create_task(self._reload_forever(), name="proxy-config-reload")
        if self.shared_stats is not None:
            await self.shared_stats.start()

    async def stop(self) -> None:
        if self.shared_stats is not None:
            await self.shared_stats.stop()
        if self._restart_handle is not None:
            self._restart_handle.cancel()
        await cancel_and_wait(self._reloader)
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None
        await self.logs.stop()

    def _check_access_policy(self, v: dict[str, Any]) -> None:
        """Refuse to start a proxy anyone could use, unless explicitly allowed (then say so, loudly)."""
        mode, host, has_key = v["proxy_access_keys"], v["proxy_host"], bool(v["proxy_upstream_api_key"])
        problem = open_access_problem(mode, has_key, host, self.settings.proxy_insecure_allow_unauthenticated)
        if problem:
            raise RuntimeError(f"refusing to start the LLM API proxy: {problem}")
        if mode == "off" and (has_key or not is_loopback(host)):
            log.warning(
                "THE LLM API PROXY ON %s NEEDS NO ACCESS KEY (TYPECASE_PROXY_INSECURE_ALLOW_UNAUTHENTICATED): "
                "anyone who reaches it uses it%s",
                host,
                " and spends the upstream key" if has_key else "",
            )
        if mode != "off" and self.proxy_keys is None:
            raise RuntimeError("refusing to start the LLM API proxy: it has no way to check access keys")

    def _apply_live(self) -> None:
        """Put the effective configuration to work (everything not marked requires_restart)."""
        v = self.runtime.values()
        if self.proxy is not None:
            self.proxy.config = ProxyConfig.from_values(v, self._listen_host)
        self.stats.resize(v["proxy_recent_requests"], v["proxy_recent_errors"])
        self.stats.max_keys = v["proxy_stats_max_keys"]
        self.logs.subscriber_queue = v["proxy_log_subscriber_queue"]
        self.logs.replay_max_lines = v["proxy_log_replay_max_lines"]
        self.logs.files.max_bytes = v["proxy_log_file_max_bytes"]
        self.logs.files.count = v["proxy_log_file_count"]

    async def _reload_forever(self) -> None:
        """Pick up changes another process (a replica sharing the data dir) made to the runtime file."""
        while True:
            await asyncio.sleep(self.settings.proxy_config_reload_seconds)
            try:
                if self.runtime.changed_on_disk():
                    async with self._update_lock:
                        changed = await asyncio.to_thread(self.runtime.load)
                        if changed:
                            self._apply_live()
                            log.info("runtime config reloaded from disk: %s", ", ".join(sorted(changed)))
            except Exception:
                log.exception("cannot reload the runtime config")

    # -- stats ------------------------------------------------------------------------------------------------
    async def _stats(self) -> RequestStats | StatsView:
        """This process's stats, or every live process's merged when they are shared."""
        return self.stats if self.shared_stats is None else await self.shared_stats.view()

    async def GetStats(self, request, context):
        caller.require_permission("server.manage")
        if request.recent_limit < 0:
            raise invalid_argument("recent_limit", "must not be negative")
        limit = min(request.recent_limit or 50, MAX_RECENT)
        window = None
        if request.HasField("window"):
            window = request.window.ToNanoseconds() / 1e9
            if window <= 0:
                raise invalid_argument("window", "must be positive")
        source = request.source
        stats = await self._stats()
        now = time.time()
        since = now - window if window is not None else 0.0
        records = [r for r in stats.recent if (not source or r.source == source) and r.time >= since]
        if window is None:  # since the start: every request, or every request of one surface
            agg = stats.totals if not source else stats.by_source.get(source, Aggregate())
            start = stats.start_time
        else:  # over the retained requests (the latest proxy_recent_requests)
            agg = Aggregate.of(records, stats.max_keys)
            start = max(stats.start_time, since)
        reply = admin_pb2.GetStatsResponse(
            start_time=_stamp(start),
            total_requests=agg.requests,
            success_count=agg.successes,
            failure_count=agg.failures,
            in_flight=stats.in_flight if source in (0, SOURCE_PROXY) else 0,
            by_status=dict(agg.by_status),
            by_path=dict(agg.by_path),
            prompt_tokens=agg.prompt_tokens,
            completion_tokens=agg.completion_tokens,
            avg_ttfb=_duration(agg.ttfb_sum / agg.ttfb_count if agg.ttfb_count else 0.0),
            avg_latency=_duration(agg.latency_sum / agg.requests if agg.requests else 0.0),
            p95_latency=_duration(percentile([r.latency for r in records], 0.95)),
            request_bytes=agg.request_bytes,
            response_bytes=agg.response_bytes,
        )
        for name, m in agg.by_model.items():
            reply.by_model[name].CopyFrom(
                admin_pb2.ModelStats(
                    request_count=m.requests,
                    failure_count=m.failures,
                    prompt_tokens=m.prompt_tokens,
                    completion_tokens=m.completion_tokens,
                    avg_ttft=_duration(m.ttft_sum / m.ttft_count if m.ttft_count else 0.0),
                    avg_latency=_duration(m.latency_sum / m.requests if m.requests else 0.0),
                )
            )
        for r in reversed(records[-limit:]):
            reply.recent_requests.append(
                admin_pb2.RequestRecord(
                    trace_id=r.trace_id,
                    time=_stamp(r.time),
                    source=cast(admin_pb2.RequestSource, r.source),
                    method=r.method,
                    path=r.path,
                    model=r.model,
                    status_code=r.status,
                    ttfb=_duration(r.ttfb),
                    latency=_duration(r.latency),
                    request_bytes=r.request_bytes,
                    response_bytes=r.response_bytes,
                    stream=r.stream,
                    user_id=r.user_id,
                    error_reason=r.error_reason,
                )
            )
        return reply

    async def ListErrors(self, request, context):
        caller.require_permission("server.manage")
        size = paging.page_size(request.page_size, 50, MAX_ERRORS_PAGE)
        position = paging.decode_token(request.page_token)
        before = position.get("id") if position else None
        since = _epoch(request, "start_time")

        def keep(e) -> bool:
            return (
                (not request.source or e.source == request.source)
                and (not request.reason or e.reason == request.reason)
                and (not request.model or e.model == request.model)
                and (since is None or e.time >= since)
            )

        matching = [e for e in reversed((await self._stats()).errors) if keep(e)]
        page = [e for e in matching if before is None or e.id < before][: size + 1]
        reply = admin_pb2.ListErrorsResponse(total_size=len(matching))
        for e in page[:size]:
            reply.errors.append(
                admin_pb2.ErrorRecord(
                    trace_id=e.trace_id,
                    time=_stamp(e.time),
                    source=cast(admin_pb2.RequestSource, e.source),
                    method=e.method,
                    path=e.path,
                    model=e.model,
                    status_code=e.status,
                    reason=e.reason,
                    message=e.message,
                    upstream_status_code=e.upstream_status,
                    upstream_body=e.upstream_body,
                    latency=_duration(e.latency),
                )
            )
        if len(page) > size:
            reply.next_page_token = paging.encode_token(id=page[size - 1].id)
        return reply

    # -- config -----------------------------------------------------------------------------------------------
    def _read_only(self) -> bool:
        directory = self.runtime.file.path.parent
        target = self.runtime.file.path if self.runtime.file.path.exists() else directory
        return not os.access(target, os.W_OK) or not os.access(directory, os.W_OK)

    @staticmethod
    def _entry_message(view: EntryView) -> admin_pb2.ConfigEntry:
        return admin_pb2.ConfigEntry(
            key=view.key,
            value=view.value,
            type=getattr(admin_pb2, f"CONFIG_VALUE_TYPE_{view.type.upper()}"),
            editable=view.editable,
            requires_restart=view.requires_restart,
            secret=view.secret,
            description=view.description,
            category=view.category,
            example=view.example,
            default_value=view.default_value,
            source=cast(admin_pb2.ConfigSource, view.source),
        )

    async def GetConfig(self, request, context):
        caller.require_permission("server.manage")
        return admin_pb2.GetConfigResponse(
            entries=[self._entry_message(v) for v in self.runtime.entries(request.category)],
            restart_required=bool(self.runtime.restart_pending()),
            read_only=self._read_only(),
        )

    async def UpdateConfig(self, request, context):
        admin = caller.require_permission("server.manage")
        if not request.values:
            raise invalid_argument("values", "give at least one key")
        try:
            changes = self.runtime.validate(dict(request.values))
        except ConfigInvalid as exc:
            raise ConfigError(exc.problems) from None
        self._check_open_access(changes)
        if request.validate_only:
            views = []
            for key, value in changes.items():
                view = self.runtime.entry(key)
                text = to_text(getattr(self.settings, key)) if value is RESET else to_text(value)
                views.append(dataclasses.replace(view, value=mask(text) if view.secret else text))
            return admin_pb2.UpdateConfigResponse(
                applied=[self._entry_message(v) for v in views],
                restart_required=any(EDITABLE[k].requires_restart for k in changes),
            )
        if self._read_only():
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "CONFIG_INVALID",
                "the runtime config file is not writable",
                {"path": str(self.runtime.file.path)},
            )
        async with self._update_lock:
            before = {k: self.runtime.entry(k).value for k in changes}
            changed = await asyncio.to_thread(self.runtime.save, changes)
            self._apply_live()
        pending = set(self.runtime.restart_pending())
        restart_required = bool(pending & set(changes))
        for key in sorted(changes):
            view = self.runtime.entry(key)
            detail: dict[str, Any] = {"changed": key in changed, "requires_restart": view.requires_restart}
            if not view.secret:
                detail.update(old=before[key], new=view.value)
            await self.audit.record(
                "config.update", actor_id=admin.user_id, resource_type="config", resource_id=key, detail=detail
            )
        self.logs.publish(
            INFO,
            LOGGER,
            f"config updated: {', '.join(sorted(changes))}",
            fields={"keys": sorted(changes), "restart_required": restart_required},
        )
        scheduled = False
        if request.restart and restart_required:
            scheduled = self._schedule_restart(1.0) is not None
        return admin_pb2.UpdateConfigResponse(
            applied=[self._entry_message(self.runtime.entry(k)) for k in sorted(changes)],
            restart_required=restart_required,
            restart_scheduled=scheduled,
        )

    def _check_open_access(self, changes: dict[str, Any]) -> None:
        """CONFIG_INVALID when the changes would leave the proxy open to anyone (see access.py)."""
        after = self.runtime.values()
        for key, value in changes.items():
            after[key] = getattr(self.settings, key) if value is RESET else value
            if hasattr(after[key], "get_secret_value"):
                after[key] = after[key].get_secret_value()
        problem = open_access_problem(
            after["proxy_access_keys"],
            bool(after["proxy_upstream_api_key"]),
            after["proxy_host"],
            self.settings.proxy_insecure_allow_unauthenticated,
        )
        involved = [k for k in ("proxy_access_keys", "proxy_upstream_api_key", "proxy_host") if k in changes]
        if problem and involved:
            raise ConfigError({key: problem for key in involved})

    # -- restart ----------------------------------------------------------------------------------------------
    def _schedule_restart(self, delay: float) -> float | None:
        if self.request_restart is None:
            return None
        if self._restart_handle is not None:
            self._restart_handle.cancel()
        self._restart_handle = asyncio.get_running_loop().call_later(delay, self.request_restart)
        self.logs.publish(WARNING, LOGGER, f"restart scheduled in {delay:g}s")
        return time.time() + delay

    async def RestartServer(self, request, context):
        admin = caller.require_permission("server.manage")
        delay = request.delay.ToNanoseconds() / 1e9 if request.HasField("delay") else 1.0
        if not 0 <= delay <= MAX_RESTART_DELAY:
            raise invalid_argument("delay", f"must be between 0 and {MAX_RESTART_DELAY:g} seconds")
        if self.request_restart is None:
            raise TypecaseError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "this server cannot restart itself")
        await self.audit.record(
            "server.restart",
            actor_id=admin.user_id,
            resource_type="server",
            detail={"reason": request.reason[:500], "delay_seconds": delay},
        )
        when = self._schedule_restart(delay)
        return admin_pb2.RestartServerResponse(restart_time=_stamp(cast(float, when)))

    # -- logs -------------------------------------------------------------------------------------------------
    @staticmethod
    def _line_message(line: LogLine) -> admin_pb2.LogLine:
        message = admin_pb2.LogLine(
            seq=line.seq,
            time=_stamp(line.time),
            level=cast(admin_pb2.LogLevel, line.level),
            logger=line.logger,
            message=line.message,
            trace_id=line.trace_id,
        )
        if line.fields:
            struct = struct_pb2.Struct()
            struct.update({k: v for k, v in line.fields.items()})
            message.fields.CopyFrom(struct)
        return message

    async def StreamLogs(self, request, context):
        caller.require_permission("server.manage")
        if request.after_seq < 0 or request.tail < 0:
            raise invalid_argument("after_seq" if request.after_seq < 0 else "tail", "must not be negative")
        log_filter = LogFilter(min_level=request.min_level, query=request.query, trace_id=request.trace_id)
        subscriber = self.logs.subscribe(log_filter)
        try:
            last = 0
            if request.after_seq > 0 or request.tail > 0:
                lines, skipped = await self.logs.replay(log_filter, request.after_seq, request.tail)
                for line in lines:
                    yield admin_pb2.StreamLogsResponse(
                        seq=line.seq, line=self._line_message(line), dropped_count=skipped
                    )
                    skipped = 0
                    last = line.seq
            while True:
                item = await subscriber.get()
                if item is None:  # shutting down
                    return
                line, dropped = item
                if line.seq <= last:  # already replayed
                    continue
                yield admin_pb2.StreamLogsResponse(seq=line.seq, line=self._line_message(line), dropped_count=dropped)
        finally:
            self.logs.unsubscribe(subscriber)

    async def ListLogs(self, request, context):
        caller.require_permission("server.manage")
        size = paging.page_size(request.page_size, DEFAULT_LOGS_PAGE, MAX_LOGS_PAGE)
        position = paging.decode_token(request.page_token)
        log_filter = LogFilter(
            min_level=request.min_level,
            query=request.query,
            trace_id=request.trace_id,
            start_time=_epoch(request, "start_time"),
            end_time=_epoch(request, "end_time"),
        )
        lines, more = await self.logs.query(log_filter, size, position.get("seq") if position else None)
        reply = admin_pb2.ListLogsResponse(lines=[self._line_message(line) for line in lines])
        if more and lines:
            reply.next_page_token = paging.encode_token(seq=lines[-1].seq)
        return reply

    async def ClearLogs(self, request, context):
        admin = caller.require_permission("server.manage")
        before = _epoch(request, "before_time")
        deleted = await self.logs.clear(before)
        await self.audit.record(
            "logs.clear", actor_id=admin.user_id, resource_type="logs", detail={"deleted": deleted, "before": before}
        )
        return admin_pb2.ClearLogsResponse(deleted_count=deleted)

    # -- audit ------------------------------------------------------------------------------------------------
    async def ListAuditEvents(self, request, context):
        caller.require_permission("audit.read")
        size = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        conditions = []
        if request.actor_id:
            conditions.append(AuditEventRow.actor_id == request.actor_id)
        if request.action.endswith(".*"):
            conditions.append(AuditEventRow.resource_type == request.action[:-2])
        elif request.action:
            conditions.append(AuditEventRow.action == request.action)
        if request.resource_type:
            conditions.append(AuditEventRow.resource_type == request.resource_type)
        if request.resource_id:
            conditions.append(AuditEventRow.resource_id == request.resource_id)
        if request.HasField("start_time"):
            conditions.append(AuditEventRow.time >= from_timestamp(request.start_time))
        if request.HasField("end_time"):
            conditions.append(AuditEventRow.time < from_timestamp(request.end_time))
        page_stmt = select(AuditEventRow).where(*conditions).order_by(AuditEventRow.id.desc()).limit(size + 1)
        if position and position.get("id"):
            page_stmt = page_stmt.where(AuditEventRow.id < str(position["id"]))
        async with self.db.session() as session:
            rows = list((await session.scalars(page_stmt)).all())
            total = await session.scalar(select(func.count()).select_from(AuditEventRow).where(*conditions))
        names = await self._usernames({r.actor_id for r in rows[:size] if r.actor_id})
        reply = admin_pb2.ListAuditEventsResponse(total_size=total or 0)
        for row in rows[:size]:
            event = admin_pb2.AuditEvent(
                id=row.id,
                time=to_timestamp(row.time),
                actor_id=row.actor_id or "",
                actor_name=names.get(row.actor_id or "", ""),
                action=row.action,
                resource_type=row.resource_type,
                resource_id=row.resource_id,
                code=_OUTCOME_CODES.get(row.outcome, code_pb2.UNKNOWN),
                trace_id=row.trace_id,
            )
            if row.detail:
                event.detail.update(row.detail)
            reply.events.append(event)
        if len(rows) > size:
            reply.next_page_token = paging.encode_token(id=rows[size - 1].id)
        return reply

    async def _usernames(self, user_ids: set[str]) -> dict[str, str]:
        """Usernames through the auth domain's service API (never its tables)."""
        if self.auth is None:
            return {}
        names = {}
        for user_id in user_ids:
            try:
                names[user_id] = (await self.auth.get_user(user_id)).username
            except TypecaseError:  # deleted since
                pass
        return names
