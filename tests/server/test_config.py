"""Settings come from the environment, .env or YAML; encrypted secrets are decrypted and never shown."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from typecase.server.config import Settings, encrypt_secret


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("TYPECASE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_embedded_defaults_live_under_the_data_dir(monkeypatch, tmp_path):
    from typecase.server.resources import Resources

    monkeypatch.setenv("TYPECASE_DATA_DIR", str(tmp_path / "data"))
    settings = Settings()
    assert settings.redis_url is None and settings.s3_endpoint is None
    resources = Resources(settings)
    assert resources.db.sqlite_path == (tmp_path / "data" / "typecase.db").resolve()
    assert [r.name.split("/")[0] for r in resources.ordered] == ["sql", "cache", "storage", "vectors"]


def test_yaml_file_and_environment_precedence(monkeypatch, tmp_path):
    config = tmp_path / "typecase.yaml"
    config.write_text("http_port: 9000\ngrpc_port: 9001\nlog_level: debug\n")
    monkeypatch.setenv("TYPECASE_CONFIG_FILE", str(config))
    monkeypatch.setenv("TYPECASE_GRPC_PORT", "9100")
    settings = Settings()
    assert (settings.http_port, settings.grpc_port, settings.log_level) == (9000, 9100, "DEBUG")


def test_encrypted_secret_is_decrypted_and_masked(monkeypatch):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("TYPECASE_SECRET_KEY", key)
    monkeypatch.setenv("TYPECASE_REDIS_URL", encrypt_secret("redis://:hunter2@cache:6379/0", key))
    settings = Settings()
    assert settings.secret("redis_url") == "redis://:hunter2@cache:6379/0"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


def test_encrypted_secret_with_wrong_or_missing_key_is_a_clear_error(monkeypatch):
    token = encrypt_secret("s3cret", Fernet.generate_key().decode())
    monkeypatch.setenv("TYPECASE_ADMIN_API_KEY", token)
    with pytest.raises(ValidationError, match="TYPECASE_SECRET_KEY"):
        Settings()
    monkeypatch.setenv("TYPECASE_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(ValidationError, match="wrong key"):
        Settings()


def test_invalid_values_are_rejected(monkeypatch):
    monkeypatch.setenv("TYPECASE_HTTP_PORT", "70000")
    with pytest.raises(ValidationError, match="http_port"):
        Settings()


@pytest.mark.parametrize(("setting", "loop_module"), [(None, "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_commands_run_on_the_configured_event_loop(monkeypatch, setting, loop_module):
    import asyncio

    from typecase.server.cli import _run

    if setting:
        monkeypatch.setenv("TYPECASE_EVENT_LOOP", setting)

    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert _run(loop_type(), Settings()).split(".")[0] == loop_module


def test_unknown_event_loop_is_refused(monkeypatch):
    monkeypatch.setenv("TYPECASE_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        Settings()
