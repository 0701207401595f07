"""`typecase add-provider`: register an upstream provider and its models with a running server, in one command.

The built-in 135M model answers as a smoke test, not a product, so the README's first steps end with adding a real
one. That takes three API calls (provider, models, defaults) whose ids chain; this module makes them over the
server's own REST API (so the running server's registry sees them at once and every check the API applies holds),
authenticated with the admin key from TYPECASE_ADMIN_API_KEY or the data dir's key file.
"""

from __future__ import annotations

import os

import httpx

from typecase.server.auth.bootstrap import ADMIN_KEY_FILE

PROVIDER_TYPES = {"openai": "PROVIDER_TYPE_OPENAI_COMPATIBLE", "anthropic": "PROVIDER_TYPE_ANTHROPIC"}
TIMEOUT_SECONDS = 30.0


class ProviderSetupError(RuntimeError):
    """Something the person running the command can fix; the message says what."""


def _admin_key(settings, admin_key_env: str) -> str:
    key = os.environ.get(admin_key_env, "").strip()
    if key:
        return key
    if settings.admin_api_key is not None and admin_key_env == "TYPECASE_ADMIN_API_KEY":
        return settings.secret("admin_api_key")
    path = settings.data_dir / ADMIN_KEY_FILE
    try:
        return path.read_text().strip()
    except OSError:
        raise ProviderSetupError(
            f"no admin key: set {admin_key_env} or run from the directory whose data dir holds {path}"
        ) from None


def _base_url(settings, url: str) -> str:
    if url:
        return url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.http_port}"


def _call(client: httpx.Client, method: str, path: str, body: dict) -> dict:
    try:
        response = client.request(method, path, json=body)
    except httpx.TransportError as exc:
        raise ProviderSetupError(
            f"cannot reach the server at {client.base_url} ({exc}): is `typecase serve` "
            "running? (--url to point elsewhere)"
        ) from None
    if response.status_code != 200:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise ProviderSetupError(f"{method} {path} failed ({response.status_code}): {message}")
    return response.json()


def register_provider(
    settings,
    *,
    name: str,
    base_url: str,
    models: list[str],
    kind: str = "openai",
    api_key_env: str = "",
    make_default: bool = True,
    url: str = "",
    admin_key_env: str = "TYPECASE_ADMIN_API_KEY",
) -> str | None:
    """Create the provider and its LLM models; returns the model made the default, if any."""
    if kind not in PROVIDER_TYPES:
        raise ProviderSetupError(f"--type must be one of {', '.join(PROVIDER_TYPES)}, not {kind!r}")
    provider = {"name": name, "type": PROVIDER_TYPES[kind], "base_url": base_url, "enabled": True}
    if api_key_env:
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise ProviderSetupError(f"{api_key_env} is empty: export the provider's API key in it first")
        provider["api_key"] = api_key
    headers = {"authorization": f"Bearer {_admin_key(settings, admin_key_env)}"}
    with httpx.Client(base_url=_base_url(settings, url), headers=headers, timeout=TIMEOUT_SECONDS) as client:
        created = _call(client, "POST", "/v1/providers", provider)["provider"]  # the body is the provider
        ids = [
            _call(
                client,
                "POST",
                "/v1/models",
                {"provider_id": created["id"], "name": model, "type": "MODEL_TYPE_LLM", "online": True},
            )["model"]["id"]
            for model in models
        ]
        if not make_default:
            return None
        _call(client, "PATCH", "/v1/llm/defaults", {"chat_model_id": ids[0], "flow_model_id": ids[0]})
    return models[0]
