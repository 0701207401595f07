"""The `typecase` command."""

from __future__ import annotations

import asyncio
import atexit
import os
import sys

import typer
from cryptography.fernet import Fernet
from pydantic import ValidationError
from rich.console import Console

from typecase.server.config import Settings, encrypt_secret
from typecase.server.infra.datadir import prepare_data_dir
from typecase.server.logs import configure_logging
from typecase.server.ports import PortsUnavailable, check_free
from typecase.server.supervisor import default_workers, shared_store_problems

cli = typer.Typer(help="Typecase: a gRPC-first LLM application platform backend.", no_args_is_help=True)
err = Console(stderr=True)


def _run(main, settings: Settings):
    """Runs the command's coroutine on the configured event loop."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform (Windows)
            err.print("[yellow]uvloop is not installed: running on asyncio's own loop[/yellow]")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def _settings() -> Settings:
    try:
        settings = Settings()
    except (ValidationError, ValueError) as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_json)
    return settings


@cli.command()
def serve(
    workers: int = typer.Option(
        None,
        "--workers",
        "-w",
        min=1,
        max=256,
        help="server processes sharing the ports (TYPECASE_WORKERS; default 1 embedded, one per core on shared stores)",
    ),
) -> None:
    """Run the gRPC server and the HTTP gateway (SIGTERM drains gracefully); with --workers, several processes."""
    settings = _settings()
    if workers is not None:
        settings.workers = workers
    count = default_workers(settings) if not settings.reuse_port else 1
    if count > 1 and (problems := shared_store_problems(settings)):
        print(f"--workers {count} needs shared stores; set " + "; ".join(problems), file=sys.stderr)
        raise typer.Exit(2)
    if not settings.reuse_port:  # a worker's siblings hold its ports: its supervisor checked them
        try:
            check_free(settings)  # before the data dir, the admin key or any heavy import
        except PortsUnavailable as exc:
            print(exc, file=sys.stderr)  # one plain line, never wrapped: scripts and tests match it
            raise typer.Exit(1) from exc
    if count > 1:
        from typecase.server.supervisor import supervise

        raise typer.Exit(_run(supervise(settings, count), settings))
    from typecase.server.app import serve as run

    try:
        _run(exit_when_done(run(settings)), settings)
    except PortsUnavailable as exc:  # taken between the check and the bind
        print(exc, file=sys.stderr)
        raise typer.Exit(1) from exc


async def exit_when_done(main) -> None:
    """Await `main`, then end the process at once with status 0.

    After a clean stop every resource is closed, but a thread still busy in an executor (an embedding model
    loading, a parse) is not interruptible, and both closing the loop and interpreter exit join such threads: the
    process would hang until the model finished loading. So the atexit handlers run (milvus-lite stops its server
    there) and the process exits without joining them. An exception still propagates and exits non-zero."""
    await main
    atexit._run_exitfuncs()  # logging.shutdown is one of them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@cli.command("model-host", hidden=True)
def model_host() -> None:
    """Run the built-in local models for the workers of `serve --workers` (started by its supervisor)."""
    settings = _settings()
    if not settings.llm_local_host_socket:
        print("model-host needs TYPECASE_LLM_LOCAL_HOST_SOCKET (serve --workers sets it)", file=sys.stderr)
        raise typer.Exit(2)
    from typecase.server.llm.modelhost import run as host

    _run(exit_when_done(host(settings)), settings)


@cli.command()
def migrate() -> None:
    """Upgrade the SQL schema to the latest revision (safe to run from several processes at once)."""
    from typecase.server.infra.schema import migrate as upgrade
    from typecase.server.infra.sql import create_database

    settings = _settings()

    async def run() -> list[str]:
        prepare_data_dir(settings.data_dir)
        db = create_database(settings.secret("database_url"), settings.data_dir)
        await db.start()
        try:
            return await upgrade(db, lock_timeout=settings.migrate_lock_timeout_seconds)
        finally:
            await db.stop()

    applied = asyncio.run(run())
    Console().print(f"applied: {', '.join(applied)}" if applied else "schema already up to date")


@cli.command()
def worker() -> None:
    """Run background jobs (knowledge ingestion) against the configured stores; SIGTERM stops taking jobs, lets
    running ones finish within jobs_shutdown_grace_seconds, then hands the rest back to other workers."""
    settings = _settings()
    _run(_run_worker(settings), settings)


async def _run_worker(settings: Settings) -> None:
    import logging
    import signal

    from typecase.server.app import App, domain_servicers
    from typecase.server.infra.schema import migrate as upgrade

    log = logging.getLogger("typecase.worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    prepare_data_dir(settings.data_dir)
    app = App(settings)  # resources and services only: a worker opens no listener
    await app.resources.start()
    started = []
    try:
        if settings.migrate_on_start:
            await upgrade(app.resources.db, lock_timeout=settings.migrate_lock_timeout_seconds)
        servicers = domain_servicers(app)
        llm = servicers.get("LLMService")
        if llm is not None and hasattr(llm, "start"):
            await llm.start()
            started.append(llm)
        if not settings.milvus_uri:
            log.warning(
                "vectors are an embedded store in the data dir, which one process at a time can open: with "
                "`typecase serve` running too, point both at a Milvus server (TYPECASE_MILVUS_URI)"
            )
        if settings.redis_url is None:
            log.info("no TYPECASE_REDIS_URL: jobs are found by polling SQL every %gs", settings.jobs_poll_seconds)
        log.info("typecase worker running (concurrency %d)", settings.jobs_concurrency)
        await servicers["KnowledgeService"].run_worker(stop)
    finally:
        for service in reversed(started):
            await service.stop()
        await app.resources.stop()
        log.info("worker stopped")


@cli.command("rotate-signing-key")
def rotate_signing_key(
    drop_previous: bool = typer.Option(
        False,
        "--drop-previous",
        help="also stop accepting access tokens signed with the current key (a leaked key); clients refresh them",
    ),
) -> None:
    """Start signing access tokens with a new key. The current key keeps verifying the tokens it signed until they
    expire, unless --drop-previous. Running replicas switch within signing_key_refresh_seconds."""
    from typecase.server.auth.tokens import rotate_signing_key as rotate
    from typecase.server.infra.sql import create_database

    settings = _settings()

    async def run() -> str:
        prepare_data_dir(settings.data_dir)
        db = create_database(settings.secret("database_url"), settings.data_dir)
        await db.start()
        try:
            return await rotate(db, drop_previous=drop_previous)
        finally:
            await db.stop()

    new_key = asyncio.run(run())
    Console().print(
        f"now signing with key {new_key}; "
        + (
            "tokens signed before no longer verify"
            if drop_previous
            else "the previous key verifies until its tokens expire"
        )
    )


@cli.command("add-provider")
def add_provider(
    name: str = typer.Option(..., help="a unique name for the provider, e.g. openai or ollama"),
    base_url: str = typer.Option(
        ...,
        help="its API's base URL, e.g. https://api.openai.com/v1, "
        "http://localhost:11434/v1 (Ollama), http://localhost:8000/v1 (vLLM)",
    ),
    model: list[str] = typer.Option(
        ...,
        help="a model the provider serves, as it names it (repeat for more); "
        "the first becomes the default with --default",
    ),
    api_key_env: str = typer.Option(
        "",
        help="the environment variable holding its API key (none for Ollama "
        "or vLLM without one); the key itself never goes on the command line",
    ),
    kind: str = typer.Option(
        "openai", "--type", help="openai (OpenAI and every OpenAI-compatible server) or anthropic"
    ),
    default: bool = typer.Option(True, help="make the first model the default for chat and flows"),
    url: str = typer.Option("", help="the running server's HTTP address; default: from the settings"),
    admin_key_env: str = typer.Option(
        "TYPECASE_ADMIN_API_KEY",
        help="the environment variable with an admin key; default: that variable, else the key file in the data dir",
    ),
) -> None:
    """Register an upstream LLM provider and its models with the running server (and make the first model the
    default), over the same HTTP API the console uses."""
    from typecase.server.provider_setup import ProviderSetupError, register_provider

    settings = _settings()
    try:
        chosen = register_provider(
            settings,
            name=name,
            base_url=base_url,
            models=model,
            kind=kind,
            api_key_env=api_key_env,
            make_default=default,
            url=url,
            admin_key_env=admin_key_env,
        )
    except ProviderSetupError as exc:
        print(exc, file=sys.stderr)
        raise typer.Exit(1) from exc
    Console().print(
        f"provider {name!r} added with {', '.join(model)}" + (f"; {chosen} is now the default model" if chosen else ""),
        highlight=False,
    )


@cli.command("gen-secret-key")
def gen_secret_key() -> None:
    """Print a new Fernet key for TYPECASE_SECRET_KEY."""
    print(Fernet.generate_key().decode())


@cli.command("encrypt-secret")
def encrypt(
    value: str = typer.Option(..., prompt=True, hide_input=True, help="the secret to encrypt"),
    key: str = typer.Option(..., envvar="TYPECASE_SECRET_KEY", help="Fernet key (TYPECASE_SECRET_KEY)"),
) -> None:
    """Encrypt a secret setting; put the printed enc:... value in the environment, .env or YAML."""
    print(encrypt_secret(value, key))


def main() -> None:
    cli()
