"""Composition root: settings -> resources -> services -> gRPC server + HTTP app.

The only module that knows every part. The HTTP app dispatches in-process to the same servicers through the same
interceptors as the gRPC server, so a REST, SSE or WebSocket call gets exactly a gRPC call's semantics.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib
import importlib.resources
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from typecase.server import gateway, http_docs
from typecase.server.admin.service import AdminService
from typecase.server.agent_wiring import Agents, FlowAgents
from typecase.server.assistants_wiring import assistant_service
from typecase.server.auth.groups import GroupService
from typecase.server.auth.interceptor import AuthInterceptor
from typecase.server.auth.membership import Memberships
from typecase.server.auth.oidc import oidc_routes
from typecase.server.auth.proxy_keys import ProxyKeys
from typecase.server.auth.ratelimit import RateLimits
from typecase.server.auth.roles import RoleService
from typecase.server.auth.service import AuthService
from typecase.server.banner import banner
from typecase.server.chat.service import ChatService
from typecase.server.compat.anthropic import anthropic_routes
from typecase.server.compat.mcp import McpEndpoint
from typecase.server.compat.openai import openai_routes
from typecase.server.config import Settings
from typecase.server.console import console_routes
from typecase.server.embed import embed_routes
from typecase.server.flow.service import FlowService
from typecase.server.gateway.cors import with_cors
from typecase.server.infra import tracing
from typecase.server.infra.audit import AuditLog
from typecase.server.infra.datadir import prepare_data_dir
from typecase.server.infra.request_head import limited_http_protocol
from typecase.server.infra.schema import migrate
from typecase.server.knowledge.reader import AttachmentReader
from typecase.server.knowledge.service import KnowledgeService
from typecase.server.llm.service import LLMService
from typecase.server.ports import Listener, PortsUnavailable, bind_socket, grpc_options
from typecase.server.resources import Resources
from typecase.server.rpc import nul_text
from typecase.server.rpc.errors import ErrorInterceptor
from typecase.server.rpc.interceptors import WrappingChain
from typecase.server.rpc.metrics import MetricsInterceptor
from typecase.server.rpc.principal import ROLE_ADMIN, Principal
from typecase.server.rpc.registration import GenericOnly
from typecase.server.rpc.trace import TraceInterceptor
from typecase.server.sandbox import Sandbox, SandboxConfig
from typecase.server.sharing_wiring import SqlResourceOwners
from typecase.server.tools_wiring import tool_service
from typecase.server.traffic import TrafficInterceptor, recorded
from typecase.v1 import (
    admin_pb2_grpc,
    assistant_pb2_grpc,
    auth_pb2_grpc,
    chat_pb2_grpc,
    flow_pb2_grpc,
    groups_pb2_grpc,
    knowledge_pb2_grpc,
    llm_pb2_grpc,
    roles_pb2_grpc,
    tools_pb2_grpc,
)

log = logging.getLogger("typecase.app")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
# HTTP statuses for reasons whose gRPC code's status would mislead (shared by the transcoder and compat surfaces).
REASON_HTTP_STATUS = {"FILE_TOO_LARGE": 413, "PAYLOAD_TOO_LARGE": 413}
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
    'fill="#334155"/><text x="8" y="12" font-size="10" text-anchor="middle" fill="white" '
    'font-family="monospace">T</text></svg>'
)


@dataclass
class Service:
    descriptor: Any  # google.protobuf.descriptor.ServiceDescriptor
    servicer: Any
    add_to_server: Callable[[Any, Any], None]


def domain_servicers(app: App) -> dict[str, Any]:
    """The implemented services, by service name, built from the app's settings and resources.
    Later entries may use earlier ones (a domain calls another through its service object, never its tables)."""
    servicers: dict[str, Any] = {"AuthService": app.auth}
    servicers["GroupService"] = GroupService(
        app.resources.db, app.audit, app.memberships, SqlResourceOwners(app.resources.db), app.settings
    )
    servicers["RoleService"] = RoleService(app.resources.db, app.audit, app.memberships, app.settings)
    resources = app.resources
    servicers["LLMService"] = LLMService(
        app.settings,
        resources.db,
        resources.cache,
        app.audit,
        concurrency=resources.slots("typecase:llm:inflight:", app.settings.llm_concurrency_lease_seconds),
        limits_storage=resources.limits_storage("typecase:llm:limits"),
    )
    servicers["KnowledgeService"] = KnowledgeService(
        resources, servicers["LLMService"], app.audit, app.settings, jobs=resources.job_queue()
    )
    servicers["FlowService"] = FlowService(
        app.resources, servicers["LLMService"], servicers["KnowledgeService"], app.audit, app.settings, app.sandbox
    )
    servicers["ToolService"] = tool_service(app, servicers)
    servicers["AssistantService"] = assistant_service(app, servicers)
    agents = Agents(
        app.settings, servicers["AssistantService"], servicers["ToolService"].api, servicers["LLMService"].generate
    )
    servicers["ChatService"] = ChatService(
        app.resources.db,
        app.resources.cache,
        servicers["LLMService"],
        app.audit,
        app.settings,
        storage=app.resources.storage,
        knowledge=servicers["KnowledgeService"],
        flow=servicers["FlowService"],
        documents=attachment_reader(servicers["KnowledgeService"]),
        agents=agents,
        embedder=servicers["LLMService"],
    )
    app.agents = agents  # /openai/v1's assistant models (domain_routes)
    servicers["FlowService"].engine.services.agents = FlowAgents(servicers["ToolService"].api)
    servicers["FlowService"].engine.services.groups_of = app.memberships.groups_of
    servicers["AdminService"] = AdminService(
        app.settings,
        audit=app.audit,
        auth=app.auth,
        request_restart=app.request_restart,
        proxy_keys=ProxyKeys(app.auth, app.settings.secret("admin_api_key")),
        cache=app.resources.cache if app.resources.redis_url else None,  # stats and logs of every process
    )
    return servicers


def compat_auth(app: App):
    """The compat surfaces' CallerAuth over the auth domain: the checks the gRPC auth interceptor applies."""
    auth, fixed = app.auth, None
    if app.settings.auth_disabled:
        fixed = Principal(auth.admin_id, ROLE_ADMIN)

    async def authenticate(credential: str, client: str, method: str = "compat") -> Principal:
        if fixed is not None:
            return fixed
        return await auth.guard.principal([("authorization", f"Bearer {credential}")], client, method)

    return authenticate


def sandbox_config(settings: Settings) -> SandboxConfig:
    return SandboxConfig(
        bwrap_path=settings.sandbox_bwrap_path,
        uid=settings.sandbox_uid,
        gid=settings.sandbox_gid,
        max_threads=settings.sandbox_max_threads,
        max_open_files=settings.sandbox_max_open_files,
        tmp_bytes=settings.sandbox_tmp_bytes,
        max_running=settings.sandbox_max_running,
        probe_timeout_seconds=settings.sandbox_probe_timeout_seconds,
        allow_unsandboxed=settings.sandbox_unsafe_allow_unsandboxed,
    )


def attachment_reader(knowledge: KnowledgeService) -> AttachmentReader:
    """Chat reads attached documents with the knowledge parsers, in the knowledge domain's parse processes."""
    ingestor = knowledge.ingestor
    return AttachmentReader(ingestor.parse_pool, ingestor.tmp_dir, ingestor.settings.parser_options)


def metrics_registry() -> CollectorRegistry:
    """This process's metrics; under `serve --workers` (PROMETHEUS_MULTIPROC_DIR set by the supervisor) the sum of
    every worker's, whichever worker answers the scrape, plus the answering worker's own process_* metrics."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    ProcessCollector(registry=registry)
    return registry


def domain_routes(app: App) -> list[Any]:
    """HTTP-by-nature surfaces served beside the transcoded API (the OpenAI- and Anthropic-compatible APIs), then
    the web console, which answers only GET/HEAD of paths outside /v1, /openai and the operations endpoints."""
    llm, authenticate, limit = app.servicers["LLMService"], compat_auth(app), app.settings.http_max_body_bytes
    mcp = app.mcp_endpoint.routes() if app.mcp_endpoint is not None else []
    compat: list[BaseRoute] = [
        *openai_routes(llm, authenticate, limit, REASON_HTTP_STATUS, agents=app.agents),
        *anthropic_routes(llm, authenticate, limit, REASON_HTTP_STATUS),
    ]
    return [
        *recorded(compat, app.servicers["AdminService"].stats),
        *oidc_routes(app.auth, app.resources.cache, app.settings),
        *mcp,
        *embed_routes(app.settings.embed_frame_ancestors),
        *console_routes(app.settings.console_dir),
    ]


def registered_services(app: App) -> list[Service]:
    """Every public service with its servicer and the generated function that registers it."""
    modules = (
        auth_pb2_grpc,
        groups_pb2_grpc,
        roles_pb2_grpc,
        llm_pb2_grpc,
        chat_pb2_grpc,
        knowledge_pb2_grpc,
        flow_pb2_grpc,
        admin_pb2_grpc,
        tools_pb2_grpc,
        assistant_pb2_grpc,
    )
    services = []
    for module in modules:
        pb2 = importlib.import_module(module.__name__.removesuffix("_grpc"))
        for name, descriptor in pb2.DESCRIPTOR.services_by_name.items():
            services.append(Service(descriptor, app.servicers[name], getattr(module, f"add_{name}Servicer_to_server")))
    return services


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the App decides when and how to shut down."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class App:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.resources = Resources(settings)
        self.ready = False
        self.grpc_port = 0  # the ports bound, once started
        self.http_port = 0
        self._grpc_server: grpc.aio.Server | None = None
        self._http_server: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task | None = None
        self._health = health_aio.HealthServicer()
        self._stop_requested = asyncio.Event()
        self.servicers: dict[str, Any] = {}
        self.mcp_endpoint: McpEndpoint | None = None  # Typecase's own tools over MCP at /mcp
        self.agents: Agents | None = None  # assistants as agents, for the compat surfaces
        self.restart_requested = False
        self._stopped = False
        self._tracing = False
        self.audit = AuditLog(self.resources.db)
        self.sandbox = Sandbox(sandbox_config(settings))
        self.memberships = Memberships(
            self.resources.db,
            self.resources.cache,
            settings.group_membership_cache_seconds,
            settings.max_groups_per_user,
        )
        self.auth = AuthService(
            self.resources.db,
            self.audit,
            RateLimits(
                self.resources.limits_storage("typecase:ratelimit"),
                settings.rate_limit_per_key,
                settings.rate_limit_per_user,
                settings.login_failures_limit,
                credential_failures=settings.credential_failures_limit,
                login_failures_per_address=settings.login_failures_per_address_limit,
                credential_failures_per_key_prefix=settings.credential_failures_per_key_prefix_limit,
            ),
            settings,
            self.memberships,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start everything; a start that fails releases what it had started (files, locks, ports) first."""
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        started = time.perf_counter()
        self._check_auth_switch()
        prepare_data_dir(self.settings.data_dir)
        # The sandbox's one-off self-check (~0.5 s; code is refused when it fails) overlaps the resources' start.
        sandbox_checked = asyncio.create_task(self.sandbox.start())
        try:
            await self.resources.start()
            if self.settings.migrate_on_start:
                await migrate(self.resources.db, lock_timeout=self.settings.migrate_lock_timeout_seconds)
        finally:
            await sandbox_checked

        self.servicers = domain_servicers(self)
        for servicer in self.servicers.values():
            if hasattr(servicer, "start"):
                await servicer.start()
        s = self.settings
        if s.otel_endpoint:
            tracing.configure(
                s.otel_endpoint,
                service_name=s.otel_service_name,
                sample_ratio=s.otel_sample_ratio,
                export_timeout_seconds=s.otel_export_timeout_seconds,
                max_queue_spans=s.otel_max_queue_spans,
                schedule_delay_seconds=s.otel_schedule_delay_seconds,
            )
            self._tracing = True
        stats = self.servicers["AdminService"].stats
        interceptors = [
            WrappingChain(
                [
                    TraceInterceptor(),
                    MetricsInterceptor(),
                    TrafficInterceptor(stats),
                    ErrorInterceptor(),
                    self._auth_interceptor(),
                ],
                check_request=nul_text.checked_request,  # no NUL in request text; inside, after auth
            ),
        ]
        limit = self.settings.grpc_max_message_bytes
        self._grpc_server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Let clients (the SDK pings every 10 s) keep idle streams alive through load balancers.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                *grpc_options(self.settings.reuse_port),
            ],
        )
        if self.settings.tools_mcp_server_enabled:
            self.mcp_endpoint = McpEndpoint(
                self.servicers["ToolService"].api, compat_auth(self), self.settings.http_max_body_bytes
            )
            await self.mcp_endpoint.start()
        in_process = gateway.InProcess(interceptors)
        services = registered_services(self)
        for service in services:
            service.add_to_server(service.servicer, GenericOnly(self._grpc_server))  # rpc/registration.py: why
            service.add_to_server(service.servicer, in_process)
        names = [s.descriptor.full_name for s in services]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc_server)
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self._grpc_server,
        )
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        try:
            self.grpc_port = self._grpc_server.add_insecure_port(address)
        except RuntimeError:  # taken since the start-up check (SO_REUSEPORT is off, so it is never shared)
            self.grpc_port = 0
        if not self.grpc_port:
            raise PortsUnavailable(
                Listener("gRPC", self.settings.host, self.settings.grpc_port, "TYPECASE_GRPC_PORT").in_use()
            )
        await self._grpc_server.start()

        http_app = gateway.create_app(
            in_process,
            [s.descriptor for s in services],
            routes=[*self._ops_routes(), *domain_routes(self)],
            max_body_bytes=self.settings.http_max_body_bytes,
            max_json_depth=self.settings.http_max_json_depth,
            max_part_header_bytes=self.settings.http_max_part_header_bytes,
            sse_keepalive_seconds=self.settings.sse_keepalive_seconds,
            descriptor_set=(importlib.resources.files("typecase.v1") / "descriptors.binpb").read_bytes(),
            title="Typecase API",
            reason_http_status=REASON_HTTP_STATUS,
            openapi_paths=http_docs.extra_paths(),
            security_schemes=http_docs.SECURITY_SCHEMES,
        )
        await self._start_http(tracing.asgi(http_app))

        for name in ("", *names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.ready = True
        gc.freeze()  # start-up objects (modules, descriptors, models) stay out of every later collection
        if self.settings.gc_gen0_threshold:
            gc.set_threshold(self.settings.gc_gen0_threshold, *gc.get_threshold()[1:])
        log.info(
            "typecase serving: grpc %s:%s, http %s:%s (started in %.1fs)",
            self.settings.host,
            self.grpc_port,
            self.settings.host,
            self.http_port,
            time.perf_counter() - started,
        )

    def _check_auth_switch(self) -> None:
        listeners = [self.settings.host] + ([self.settings.proxy_host] if self.settings.proxy_enabled else [])
        if self.settings.auth_disabled and not set(listeners) <= LOOPBACK_HOSTS:
            raise RuntimeError(
                "TYPECASE_AUTH_DISABLED is for local development only: every listener "
                "(TYPECASE_HOST, TYPECASE_PROXY_HOST) must be on loopback"
            )

    def _auth_interceptor(self) -> AuthInterceptor:
        if not self.settings.auth_disabled:
            return AuthInterceptor(self.auth.guard, self.auth.proxies)
        log.warning("AUTHENTICATION IS DISABLED (TYPECASE_AUTH_DISABLED): every caller acts as the admin")
        return AuthInterceptor(self.auth.guard, self.auth.proxies, Principal(self.auth.admin_id, ROLE_ADMIN))

    async def _start_http(self, http_app) -> None:
        s = self.settings
        http_app = with_cors(
            http_app, s.cors_allowed_origins, s.cors_allowed_methods, s.cors_allowed_headers, s.cors_max_age_seconds
        )
        config = uvicorn.Config(
            http_app,
            host=self.settings.host,
            port=self.settings.http_port,
            lifespan="off",
            log_config=None,
            access_log=False,
            # X-Forwarded-For names the client only when a listed proxy sent it (uvicorn's default believes it
            # from loopback, which let any local caller choose its address for the failure budgets).
            proxy_headers=bool(self.settings.trusted_proxies),
            forwarded_allow_ips=list(self.settings.trusted_proxies),
            timeout_graceful_shutdown=int(self.settings.shutdown_grace_seconds) or None,
            http=limited_http_protocol(self.settings.http_max_header_bytes, self.settings.http_max_header_count),
        )
        self._http_server = _EmbeddedUvicorn(config)
        try:
            sock = bind_socket(s.host, s.http_port, s.reuse_port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortsUnavailable(Listener("HTTP", s.host, s.http_port, "TYPECASE_HTTP_PORT").in_use()) from exc
        self._http_task = asyncio.create_task(self._http_server.serve(sockets=[sock]))
        while not self._http_server.started:
            if self._http_task.done():
                with contextlib.suppress(SystemExit):  # uvicorn's own start errors must not end the process
                    self._http_task.result()
                raise RuntimeError("the HTTP listener did not start")
            await asyncio.sleep(0.01)
        self.http_port = self._http_server.servers[0].sockets[0].getsockname()[1]

    def request_stop(self) -> None:
        self._stop_requested.set()

    def request_restart(self) -> None:
        """Drain and stop like SIGTERM, then re-exec the same command (settings that need a restart apply)."""
        self.restart_requested = True
        self._stop_requested.set()

    async def wait_for_stop(self) -> None:
        await self._stop_requested.wait()

    async def stop(self) -> None:
        """Stop accepting, let in-flight calls and streams finish within the grace period, then release resources.
        Once: a failed start has already stopped."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_seconds
        log.info("shutting down: draining in-flight calls for up to %gs", grace)
        self.ready = False
        waits: list[Awaitable[Any]] = []
        if self._http_server is not None and self._http_task is not None:
            self._http_server.should_exit = True
            waits.append(self._http_task)
        await self._health.enter_graceful_shutdown()
        if self._grpc_server is not None:
            waits.append(self._grpc_server.stop(grace))
        await asyncio.gather(*waits, return_exceptions=True)
        if self.mcp_endpoint is not None:
            await self.mcp_endpoint.stop()
        for servicer in reversed(self.servicers.values()):  # dependents first: flow and chat before llm
            if hasattr(servicer, "stop"):
                await servicer.stop()
        await self.resources.stop()
        if self._tracing:
            self._tracing = False
            await asyncio.to_thread(tracing.shutdown)  # exports what is queued, bounded by the export timeout
        log.info("stopped")

    # -- HTTP operations routes ------------------------------------------------------------------------------
    def _ops_routes(self) -> list[Route]:
        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def readyz(request: Request) -> Response:
            checks = await self.resources.health()
            ok = self.ready and all(h.ok for h in checks.values())
            body = {
                "status": "ready" if ok else "unavailable",
                "serving": self.ready,
                "resources": {name: {"ok": h.ok, "detail": h.detail} for name, h in checks.items()},
                "code_sandbox": self.sandbox.status(),  # informative: code nodes are refused without one
            }
            return JSONResponse(body, status_code=200 if ok else 503)

        async def metrics(request: Request) -> Response:
            return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)

        async def favicon(request: Request) -> Response:  # the console's own icon, for /docs and direct visits
            return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})

        return [
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/favicon.ico", favicon),
        ]


async def serve(settings: Settings) -> None:

    app = App(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    try:
        await app.start()
        print(banner(settings, app.grpc_port, app.http_port, app.servicers["AdminService"].proxy_port), flush=True)
        await app.wait_for_stop()
    finally:
        await app.stop()
    if app.restart_requested:
        log.info("restarting: re-executing %s", " ".join(sys.orig_argv))
        os.execv(sys.executable, sys.orig_argv)
