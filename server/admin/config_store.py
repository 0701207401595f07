"""The admin-editable runtime configuration: typed entries with metadata, validated updates, atomic persistence.

Entries are settings (server/config.py) with metadata: value type (string/number/boolean/json, from the field's
annotation), editable, requires_restart, secret, description, category, example. The proxy's own entries are
editable; every other setting is listed read-only so an admin sees the whole effective configuration (secrets
masked). A TYPECASE_* environment variable makes its entry read-only.

Precedence of a value: environment variable > runtime file (UpdateConfig) > .env/YAML/constructor > default.

The runtime file (<data_dir>/proxy_config.json) is written atomically: under a file lock (fcntl.flock on a side
file; where locks are unsupported, a warning and a process-local lock only), the current file is re-read and
merged, the new document goes to a temp file that is fsynced, the previous document is copied to `.bak` (also
through a fsynced temp file), the temp file is renamed over the target and the directory fsynced. A crash at any
point leaves either the old or the new file whole; stale temp files are removed on the next load. The backup never
keeps a secret the new document no longer holds (a reset or replaced upstream key leaves the disk with the change;
without TYPECASE_SECRET_KEY it would sit there in plain text): a corrupted file may lose a just-changed secret, but
never brings back an old one.

Secrets are shown masked: "****" plus their last 4 characters when they are at least 32 characters long, so that
the shown part is a small fraction of the whole; shorter ones show nothing.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, cast, get_args, get_origin

import httpx
from pydantic import SecretStr, TypeAdapter, ValidationError

from typecase.server.config import ENCRYPTED_PREFIX, Settings, decrypt_secret, encrypt_secret, upstream_key_problem
from typecase.server.proxy.headers import HOP_BY_HOP

log = logging.getLogger("typecase.proxy.config")

STRING, NUMBER, BOOLEAN, JSON = "string", "number", "boolean", "json"
SOURCE_DEFAULT, SOURCE_ENV, SOURCE_FILE, SOURCE_RUNTIME = 1, 2, 3, 4  # typecase.v1.ConfigSource
FORMAT_VERSION = 1
RESET = object()  # an update value meaning "back to the default"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 7230 header field name
_FORBIDDEN_CUSTOM = {b"host", b"content-length", b"expect"}
MASK_TAIL_MIN_CHARS = 32  # secrets at least this long show their last 4 characters when masked


# -- entry metadata --------------------------------------------------------------------------------------------
def _check_base_url(value: Any) -> str | None:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        return "not a URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "must be an http:// or https:// URL with a host"
    if url.query or url.fragment:
        return "must not have a query or fragment"
    return None


def _check_headers(value: Any) -> str | None:
    for name, text in value.items():
        if not _TOKEN.match(name):
            return f"{name!r} is not a header name"
        low = name.lower().encode()
        if low in HOP_BY_HOP or low in _FORBIDDEN_CUSTOM:
            return f"{name!r} cannot be injected (connection-level header)"
        if any(c in text for c in "\r\n\0"):
            return f"the value of {name!r} contains a line break"
    return None


def _check_upstream_key(value: Any) -> str | None:
    return upstream_key_problem(value.get_secret_value() if isinstance(value, SecretStr) else str(value))


@dataclass(frozen=True)
class EntrySpec:
    key: str
    requires_restart: bool = False
    example: str = ""
    check: Callable[[Any], str | None] | None = None


# The editable entries: the proxy's. Everything else in Settings is listed read-only.
EDITABLE: dict[str, EntrySpec] = {
    spec.key: spec
    for spec in (
        EntrySpec("proxy_enabled", True, "true"),
        EntrySpec("proxy_host", True, "0.0.0.0"),
        EntrySpec("proxy_port", True, "8088"),
        EntrySpec("proxy_target_base_url", False, "https://api.anthropic.com", _check_base_url),
        EntrySpec("proxy_preserve_host", False, "false"),
        EntrySpec("proxy_forward_client_credentials", False, "true"),
        EntrySpec("proxy_upstream_api_key", False, "sk-ant-...", _check_upstream_key),
        EntrySpec("proxy_access_keys", False, "auto"),
        EntrySpec("proxy_forward_client_address", False, "false"),
        EntrySpec("proxy_max_header_bytes", True, "65536"),
        EntrySpec("proxy_max_header_count", True, "100"),
        EntrySpec("proxy_custom_headers", False, '{"x-team": "search"}', _check_headers),
        EntrySpec("proxy_system_prompt_enabled", False, "true"),
        EntrySpec("proxy_system_prompt_mode", False, "insert"),
        EntrySpec("proxy_system_prompt_text", False, "You are a careful assistant for the search team."),
        EntrySpec("proxy_system_prompt_marker", False, "search team"),
        EntrySpec("proxy_max_request_bytes", False, "33554432"),
        EntrySpec("proxy_connect_timeout_seconds", False, "10"),
        EntrySpec("proxy_read_timeout_seconds", False, "600"),
        EntrySpec("proxy_write_timeout_seconds", False, "60"),
        EntrySpec("proxy_pool_timeout_seconds", False, "10"),
        EntrySpec("proxy_max_connections", True, "1000"),
        EntrySpec("proxy_keepalive_expiry_seconds", True, "30"),
        EntrySpec("proxy_client_keepalive_seconds", True, "75"),
        EntrySpec("proxy_max_client_connections", True, "0"),
        EntrySpec("proxy_error_body_bytes", False, "2048"),
        EntrySpec("proxy_recent_requests", False, "1000"),
        EntrySpec("proxy_recent_errors", False, "500"),
        EntrySpec("proxy_stats_max_keys", False, "500"),
        EntrySpec("proxy_log_subscriber_queue", False, "1000"),
        EntrySpec("proxy_log_replay_max_lines", False, "10000"),
        EntrySpec("proxy_log_file_max_bytes", False, "10485760"),
        EntrySpec("proxy_log_file_count", False, "5"),
    )
}

_CATEGORY_PREFIXES = (
    ("proxy_", "proxy"),
    ("llm_", "llm"),
    ("knowledge_", "knowledge"),
    ("jobs_", "knowledge"),
    ("chat_", "chat"),
    ("flow_", "flow"),
    ("database_", "database"),
    ("redis_", "database"),
    ("s3_", "database"),
    ("milvus_", "database"),
    ("admin_", "security"),
    ("auth_", "security"),
    ("secret_", "security"),
    ("rate_limit_", "security"),
    ("login_", "security"),
    ("credential_", "security"),
    ("access_token_", "security"),
    ("refresh_token_", "security"),
    ("api_key_", "security"),
)


def category_of(key: str) -> str:
    return next((category for prefix, category in _CATEGORY_PREFIXES if key.startswith(prefix)), "server")


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not NoneType]
        if len(args) == 1:
            return args[0]
    return annotation


def value_type(annotation: Any) -> str:
    inner = _unwrap_optional(annotation)
    origin = get_origin(inner) or inner
    if inner is bool:
        return BOOLEAN
    if inner in (int, float):
        return NUMBER
    if origin in (dict, list):
        return JSON
    return STRING


def to_text(value: Any) -> str:
    """A value as ConfigEntry.value text."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def mask(text: str) -> str:
    if not text:
        return ""
    return "****" + text[-4:] if len(text) >= MASK_TAIL_MIN_CHARS else "****"


@dataclass(frozen=True)
class EntryView:
    key: str
    value: str  # masked when secret
    type: str
    editable: bool
    requires_restart: bool
    secret: bool
    description: str
    category: str
    example: str
    default_value: str
    source: int


class ConfigInvalid(Exception):
    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
        self.problems = problems


# -- the file --------------------------------------------------------------------------------------------------
class ConfigFile:
    """A JSON document replaced atomically, with a backup of the previous version and a cross-process lock."""

    def __init__(self, path: Path, write_delay: float = 0.0, secret_keys: frozenset[str] = frozenset()):
        """`secret_keys`: values the backup keeps only while the current document holds the same."""
        self.path = path
        self.secret_keys = secret_keys
        self.backup = path.with_name(path.name + ".bak")
        self.lock_path = path.with_name(path.name + ".lock")
        self.write_delay = write_delay
        self._thread_lock = threading.Lock()
        self.locking = "flock"

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._thread_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                held = self._flock(fd)
                try:
                    yield
                finally:
                    if held:
                        self._funlock(fd)
            finally:
                os.close(fd)

    def _flock(self, fd: int) -> bool:
        try:
            import fcntl
        except ImportError:  # not a POSIX system
            self._degrade("fcntl is unavailable")
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
                self._degrade(os.strerror(exc.errno))
                return False
            raise

    @staticmethod
    def _funlock(fd: int) -> None:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)

    def _degrade(self, why: str) -> None:
        if self.locking != "none":
            log.warning(
                "file locks are not supported for %s (%s): config writes are serialised within this process only",
                self.lock_path,
                why,
            )
        self.locking = "none"

    def read(self) -> dict[str, Any]:
        """The stored document; the backup when the file is unreadable; empty when there is neither."""
        for candidate in (self.path, self.backup):
            try:
                document = json.loads(candidate.read_bytes())
            except FileNotFoundError:
                continue
            except (ValueError, OSError) as exc:
                log.error("runtime config %s is unreadable (%s); trying its backup", candidate, exc)
                continue
            if isinstance(document, dict) and isinstance(document.get("values", {}), dict):
                return document
            log.error("runtime config %s has an unexpected shape; ignored", candidate)
        return {}

    def stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def remove_stale_temps(self) -> None:
        try:
            with self.locked():  # no writer of ours holds a temp file while we hold the lock
                for temp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                    log.warning("removing %s, left by a write that did not finish", temp.name)
                    temp.unlink(missing_ok=True)
        except OSError as exc:  # a read-only data dir: the config is then read-only too (GetConfig.read_only)
            log.warning("cannot clean up around %s: %s", self.path, exc)

    def update(self, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Re-read under the lock, let `mutate` change the values in place, write atomically; returns the values."""
        with self.locked():
            document = self.read()
            values = dict(document.get("values", {}))
            mutate(values)
            new = {"version": FORMAT_VERSION, "update_time": time.time(), "values": values}
            self._replace(_dump(new), _dump(self._backup_of(document, values)) if document else None)
            return values

    def _backup_of(self, previous: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        kept = dict(previous.get("values", {}))
        for key in self.secret_keys:
            if key in kept and kept[key] != values.get(key):
                del kept[key]
        return {**previous, "values": kept}

    def _write_temp(self, data: bytes) -> Path:
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            half = len(data) // 2
            os.write(fd, data[:half])
            if self.write_delay:
                time.sleep(self.write_delay)  # testing: a crash here must leave the old file intact
            view = memoryview(data)[half:]
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return temp

    def _replace(self, data: bytes, previous: bytes | None) -> None:
        temp = self._write_temp(data)
        try:
            if previous is not None:
                os.replace(self._write_temp(previous), self.backup)
            os.replace(temp, self.path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:  # some filesystems refuse fsync on directories
            pass
        finally:
            os.close(fd)


# -- the configuration ---------------------------------------------------------------------------------------
class RuntimeConfig:
    def __init__(self, settings: Settings, environ: dict[str, str] | None = None):
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.fields = Settings.model_fields
        secrets = frozenset(k for k in EDITABLE if _unwrap_optional(self.fields[k].annotation) is SecretStr)
        self.file = ConfigFile(
            settings.data_dir / settings.proxy_config_file, settings.proxy_config_write_delay_seconds, secrets
        )
        self.overrides: dict[str, Any] = {}  # validated values from the runtime file
        self._adapters: dict[str, TypeAdapter] = {}
        self._stamp: tuple[int, int] | None = None
        self._boot: dict[str, Any] = {}

    # -- loading ----------------------------------------------------------------------------------------------
    def load(self, first: bool = False) -> set[str]:
        """(Re)read the runtime file; returns the keys whose effective value changed. Blocking: call in a thread."""
        if first:
            self.file.remove_stale_temps()
        self._stamp = self.file.stamp()
        stored = self.file.read().get("values", {})
        overrides: dict[str, Any] = {}
        for key, raw in stored.items():
            if key not in EDITABLE:
                log.warning("runtime config: unknown key %r ignored", key)
                continue
            if self.from_env(key):
                continue
            try:
                overrides[key] = self._validate(key, self._decode_stored(key, raw))
            except (ValueError, ValidationError) as exc:
                log.error("runtime config: invalid stored value for %r ignored: %s", key, _first_error(exc))
        before = {k: self.effective(k) for k in EDITABLE}
        self.overrides = overrides
        if first:
            self._boot = {k: self.effective(k) for k, spec in EDITABLE.items() if spec.requires_restart}
        return {k for k in EDITABLE if self.effective(k) != before[k]}

    def changed_on_disk(self) -> bool:
        return self.file.stamp() != self._stamp

    def _decode_stored(self, key: str, raw: Any) -> Any:
        if isinstance(raw, str) and raw.startswith(ENCRYPTED_PREFIX):
            return decrypt_secret(raw, self.settings.secret_key)
        return raw

    def _encode_stored(self, key: str, value: Any) -> Any:
        if isinstance(value, SecretStr):
            plain = value.get_secret_value()
            key_ = self.settings.secret_key
            return encrypt_secret(plain, key_.get_secret_value()) if key_ is not None else plain
        return value

    # -- reading ----------------------------------------------------------------------------------------------
    def from_env(self, key: str) -> bool:
        return f"TYPECASE_{key.upper()}" in self.environ

    def effective(self, key: str) -> Any:
        if key in self.overrides:
            return self.overrides[key]
        return getattr(self.settings, key)

    def values(self) -> dict[str, Any]:
        """Effective values of the editable entries, secrets unwrapped."""
        out = {}
        for key in EDITABLE:
            value = self.effective(key)
            out[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return out

    def source(self, key: str) -> int:
        if self.from_env(key):
            return SOURCE_ENV
        if key in self.overrides:
            return SOURCE_RUNTIME
        if key in self.settings.model_fields_set:
            return SOURCE_FILE
        return SOURCE_DEFAULT

    def restart_pending(self) -> list[str]:
        """Keys needing a restart whose effective value differs from the one this process started with."""
        return sorted(k for k, v in self._boot.items() if self.effective(k) != v)

    def entry(self, key: str) -> EntryView:
        info = self.fields[key]
        spec = EDITABLE.get(key)
        secret = _unwrap_optional(info.annotation) is SecretStr
        default = info.get_default(call_default_factory=True)
        text = to_text(self.effective(key))
        return EntryView(
            key=key,
            value=mask(text) if secret else text,
            type=value_type(info.annotation),
            editable=spec is not None and not self.from_env(key),
            requires_restart=spec.requires_restart if spec is not None else True,
            secret=secret,
            description=info.description or "",
            category=category_of(key),
            example=spec.example if spec is not None else "",
            default_value="" if secret else to_text(default),
            source=self.source(key),
        )

    def entries(self, category: str = "") -> list[EntryView]:
        views = [self.entry(key) for key in self.fields if not category or category_of(key) == category]
        return sorted(views, key=lambda v: (v.category, v.key))

    # -- updating ---------------------------------------------------------------------------------------------
    def validate(self, values: dict[str, str]) -> dict[str, Any]:
        """Parsed new values by key (RESET to go back to the default); ConfigInvalid naming every bad key."""
        problems: dict[str, str] = {}
        changes: dict[str, Any] = {}
        for key, text in values.items():
            if key not in self.fields:
                problems[key] = "unknown configuration key"
                continue
            if key not in EDITABLE:
                problems[key] = "not editable at run time"
                continue
            if self.from_env(key):
                problems[key] = f"set by the environment variable TYPECASE_{key.upper()}; not editable at run time"
                continue
            if text == "":
                changes[key] = RESET
                continue
            current = to_text(self.effective(key))
            if self.entry(key).secret and text == mask(current) and current:
                continue  # the masked value sent back unchanged
            try:
                changes[key] = self._validate(key, self._parse(key, text))
            except (ValueError, ValidationError) as exc:
                problems[key] = _first_error(exc)
        if problems:
            raise ConfigInvalid(problems)
        return changes

    def _parse(self, key: str, text: str) -> Any:
        kind = value_type(self.fields[key].annotation)
        if kind == BOOLEAN:
            low = text.strip().lower()
            if low not in ("true", "false"):
                raise ValueError('must be "true" or "false"')
            return low == "true"
        if kind == NUMBER:
            try:
                number = json.loads(text.strip())
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                raise ValueError(f"{text!r} is not a number")
            if _unwrap_optional(self.fields[key].annotation) is int and isinstance(number, float):
                if not number.is_integer():
                    raise ValueError("must be a whole number")
                number = int(number)
            return number
        if kind == JSON:
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON document: {exc}") from None
        return text

    def _validate(self, key: str, value: Any) -> Any:
        adapter = self._adapters.get(key)
        if adapter is None:
            info = self.fields[key]
            annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            adapter = self._adapters[key] = TypeAdapter(cast(Any, annotation))
        parsed = adapter.validate_python(value)
        spec = EDITABLE.get(key)
        if spec is not None and spec.check is not None and parsed is not None:
            problem = spec.check(parsed)
            if problem:
                raise ValueError(problem)
        return parsed

    def save(self, changes: dict[str, Any]) -> set[str]:
        """Persist the changes (merged with what another process may have written meanwhile) and apply them here;
        returns the keys whose effective value changed. Blocking: call in a thread."""

        def mutate(stored: dict[str, Any]) -> None:
            for key, value in changes.items():
                if value is RESET:
                    stored.pop(key, None)
                else:
                    stored[key] = self._encode_stored(key, value)

        before = {k: self.effective(k) for k in EDITABLE}
        self.file.update(mutate)
        self.load()
        return {k for k in EDITABLE if self.effective(k) != before[k]}


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True).encode() + b"\n"


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return error.get("msg", str(exc))
    return str(exc)
