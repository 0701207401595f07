"""The start-up banner: where everything is, printed on every start after the server is ready.

The admin key used to be printed once, in the middle of ~60 log lines, and never pointed to again. The banner is
plain text on stdout (not a log line: it is for the person at the terminal, and stays readable with JSON logs), a
few lines long, and says where the key is kept rather than the key itself.
"""

from __future__ import annotations

from pathlib import Path

from typecase.server.auth.bootstrap import ADMIN_KEY_FILE

WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def _url_host(host: str) -> str:
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"  # reachable from this machine; other machines use this machine's name
    return f"[{host}]" if ":" in host else host


def banner(settings, grpc_port: int, http_port: int, proxy_port: int | None = None) -> str:
    """The lines to print once `serve` is ready, with the ports actually bound."""
    http = f"http://{_url_host(settings.host)}:{http_port}"
    grpc_address = f"{_url_host(settings.host)}:{grpc_port}"
    if settings.admin_api_key is not None:
        key = "TYPECASE_ADMIN_API_KEY (from the environment or settings file)"
    else:
        path = settings.data_dir / ADMIN_KEY_FILE
        key = str(path) if path.exists() else f"{path} was removed: create a key with POST /v1/api-keys"
    console = (
        f"{http}/"
        if (Path(settings.console_dir) / "index.html").exists()
        else f"{http}/ (not built yet: run `make console`)"
    )
    password = (
        f"user {settings.admin_username!r} with TYPECASE_ADMIN_PASSWORD, or the admin key"
        if settings.admin_password is not None
        else "the admin key (set TYPECASE_ADMIN_PASSWORD to use the username/password tab)"
    )
    rows = [
        ("Console", console),
        ("Sign in", password),
        ("Admin key", key),
        ("API docs", f"{http}/docs  (OpenAPI: {http}/openapi.json)"),
        ("OpenAI API", f"{http}/openai/v1  (any OpenAI SDK: base_url=..., api_key=the admin key)"),
        ("gRPC", f"{grpc_address}  (reflection on: grpcurl -plaintext {grpc_address} list)"),
    ]
    if proxy_port:
        rows.append(("LLM proxy", f"http://{_url_host(settings.proxy_host)}:{proxy_port}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(["", "Typecase is ready.", *(f"  {name.ljust(width)}  {value}" for name, value in rows), ""])
