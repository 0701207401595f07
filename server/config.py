"""Settings: TYPECASE_* environment variables, a .env file, or a YAML file named by TYPECASE_CONFIG_FILE.

Secret fields may be given encrypted as `enc:<fernet token>` (see `typecase encrypt-secret`); they are decrypted
with TYPECASE_SECRET_KEY at load time and held as SecretStr so they never reach a log line or a repr.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENCRYPTED_PREFIX = "enc:"
MiB = 1024 * 1024

SECRET_FIELDS = ("database_url", "redis_url", "s3_secret_key", "milvus_token", "admin_api_key")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TYPECASE_", env_file=".env", extra="ignore", validate_default=True
    )

    # Listeners. Loopback by default: set TYPECASE_HOST=0.0.0.0 to serve other machines.
    host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    proxy_enabled: bool = False
    proxy_port: int = Field(8088, ge=0, le=65535)

    data_dir: Path = Path(".typecase")

    # Resources. Unset means the embedded implementation under data_dir.
    database_url: SecretStr | None = None
    database_pool_size: int = Field(10, ge=1)
    redis_url: SecretStr | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "typecase"
    s3_region: str | None = None
    s3_secure: bool = False
    milvus_uri: str | None = None
    milvus_token: SecretStr | None = None

    secret_key: SecretStr | None = Field(None, description="Fernet key that decrypts enc: values")
    admin_api_key: SecretStr | None = None

    # Limits and timeouts.
    grpc_max_message_bytes: int = Field(16 * MiB, ge=1024)
    http_max_body_bytes: int = Field(4 * MiB, ge=1024)
    sse_keepalive_seconds: float = Field(15.0, gt=0)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    migrate_on_start: bool = True
    migrate_lock_timeout_seconds: float = Field(120.0, gt=0)

    log_level: str = "INFO"
    log_json: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings]
        yaml_file = os.environ.get("TYPECASE_CONFIG_FILE")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return value

    @model_validator(mode="after")
    def _decrypt_secrets(self) -> Settings:
        for name in SECRET_FIELDS:
            value: SecretStr | None = getattr(self, name)
            if value is not None and value.get_secret_value().startswith(ENCRYPTED_PREFIX):
                object.__setattr__(self, name, SecretStr(decrypt_secret(value.get_secret_value(), self.secret_key)))
        return self

    # Derived locations for the embedded mode.
    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'typecase.db').resolve()}"

    @cached_property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "objects"

    def secret(self, name: str) -> str | None:
        value: Any = getattr(self, name)
        return value.get_secret_value() if value is not None else None


def decrypt_secret(token: str, key: SecretStr | None) -> str:
    if key is None:
        raise ValueError("an encrypted setting (enc:...) needs TYPECASE_SECRET_KEY")
    try:
        return Fernet(key.get_secret_value().encode()).decrypt(token[len(ENCRYPTED_PREFIX) :].encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise ValueError("cannot decrypt an enc: setting with TYPECASE_SECRET_KEY (wrong key?)") from exc


def encrypt_secret(plaintext: str, key: str) -> str:
    return ENCRYPTED_PREFIX + Fernet(key.encode()).encrypt(plaintext.encode()).decode()
