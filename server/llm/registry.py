"""The provider/model registry: SQL is the truth; each replica serves inference from an in-memory snapshot.

Reading SQL on every generation would cost more than relaying the answer, so the snapshot (providers with their
decrypted keys, models, defaults) is reloaded on every local write, on the bus message another replica publishes
after its writes, and every `llm_registry_refresh_seconds` as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from typecase.server.config import Settings
from typecase.server.infra.cache import Cache
from typecase.server.infra.sql import Database, MetaEntry, utcnow
from typecase.server.llm.models import DefaultRow, ModelRow, ProviderRow
from typecase.server.llm.providers import local

log = logging.getLogger("typecase.llm")

MISS_RELOAD_SECONDS = 0.5
CHANNEL = "llm:registry"
USES = ("chat", "flow", "knowledge_embedding", "title", "rerank")
USE_TYPES = {"chat": "llm", "flow": "llm", "title": "llm", "knowledge_embedding": "embedding", "rerank": "rerank"}
SEEDED_KEY = "llm.local_models_seeded"
LOCAL_PROVIDER = "local"
LOCAL_CHAT = "smollm2-135m-instruct"
LOCAL_EMBEDDING = "all-minilm-l6-v2"


class SecretBox:
    """Encrypts provider API keys and extra headers (they carry upstream credentials too) at rest with
    TYPECASE_SECRET_KEY, or with a key file in the data dir.

    Replicas sharing a database must share the key: set TYPECASE_SECRET_KEY in production.
    """

    def __init__(self, settings: Settings):
        key = settings.secret("secret_key")
        if key is None:
            key = self._key_file(settings.data_dir, shared_database=settings.database_url is not None)
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)

    @staticmethod
    def _key_file(data_dir: Path, shared_database: bool = False) -> str:
        path = data_dir / "llm-secret.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(Fernet.generate_key().decode())
                os.link(path.with_suffix(".tmp"), path)  # atomic: a racing process keeps the first key
                # A warning only where it can bite: the embedded SQLite database has no other replica.
                log.log(
                    logging.WARNING if shared_database else logging.INFO,
                    "no TYPECASE_SECRET_KEY: provider API keys are encrypted with %s; replicas sharing "
                    "a database need TYPECASE_SECRET_KEY instead",
                    path,
                )
            except FileExistsError:
                pass
            finally:
                path.with_suffix(".tmp").unlink(missing_ok=True)
        return path.read_text().strip()

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str | None:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            return None

    def encrypt_headers(self, headers: dict[str, str]) -> str | None:
        return self.encrypt(json.dumps(headers)) if headers else None

    def decrypt_headers(self, token: str | None) -> dict[str, str] | None:
        """The headers sealed by encrypt_headers; {} for none, None when the token cannot be decrypted."""
        if not token:
            return {}
        plain = self.decrypt(token)
        return None if plain is None else json.loads(plain)


MASK = "****"
MASK_REVEAL_MIN_CHARS = 32  # below this, the last 4 characters are too large a share of the secret to show


def mask_key(key: str) -> str:
    """A secret as shown to people: "sk-****abcd" for a key of 32 characters or more, "****" for a shorter one
    (its last 4 characters would give away too much of it), "" for none."""
    if not key:
        return ""
    if len(key) < MASK_REVEAL_MIN_CHARS:
        return MASK
    return f"{key[:3]}{MASK}{key[-4:]}"


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    """Header names as they are, values masked."""
    return {name: mask_key(value) or MASK for name, value in headers.items()}


@dataclass
class Snapshot:
    providers: dict[str, ProviderRow] = field(default_factory=dict)
    models: dict[str, ModelRow] = field(default_factory=dict)
    by_name: dict[str, ModelRow] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    api_keys: dict[str, str | None] = field(default_factory=dict)
    extra_headers: dict[str, dict[str, str]] = field(default_factory=dict)  # decrypted, by provider id

    def model(self, ref: str) -> ModelRow | None:
        """A model by id, or by its unique name (what OpenAI-style clients send)."""
        return self.models.get(ref) or self.by_name.get(ref)


class Registry:
    def __init__(self, db: Database, cache: Cache, settings: Settings):
        self.db = db
        self.cache = cache
        self.settings = settings
        self.secrets = SecretBox(settings)
        self.snapshot = Snapshot()
        self.version = 0  # bumped on every reload; adapters are rebuilt when their provider changed
        self._tasks: list[asyncio.Task] = []
        self._reload_lock = asyncio.Lock()
        self._last_miss_reload = 0.0

    async def start(self) -> None:
        if self.settings.llm_local_enabled:
            await self.seed_local_models()
        await self.seal_stored_secrets()
        await self.reload()
        subscribed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._follow_bus(subscribed)), asyncio.create_task(self._refresh())]
        await asyncio.wait_for(subscribed.wait(), 10)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def reload(self) -> None:
        async with self._reload_lock:
            async with self.db.session() as session:
                providers = (await session.scalars(select(ProviderRow))).all()
                models = (await session.scalars(select(ModelRow))).all()
                defaults = (await session.scalars(select(DefaultRow))).all()
            snap = Snapshot(
                providers={p.id: p for p in providers},
                models={m.id: m for m in models},
                by_name={m.name: m for m in models},
                defaults={d.purpose: d.model_id for d in defaults},
            )
            for p in providers:
                snap.api_keys[p.id] = self.secrets.decrypt(p.api_key_encrypted) if p.api_key_encrypted else None
                if p.api_key_encrypted and snap.api_keys[p.id] is None:
                    log.error(
                        "cannot decrypt the API key of provider %r: is TYPECASE_SECRET_KEY the one it was stored with?",
                        p.name,
                    )
                headers = self.secrets.decrypt_headers(p.extra_headers_encrypted)
                if headers is None:
                    log.error(
                        "cannot decrypt the extra headers of provider %r: is TYPECASE_SECRET_KEY the one they "
                        "were stored with?",
                        p.name,
                    )
                snap.extra_headers[p.id] = headers or {}
            self.snapshot = snap
            self.version += 1

    async def reload_on_miss(self) -> bool:
        """Something another replica just wrote may not be in this snapshot yet (the change feed is asynchronous):
        reload, at most once per MISS_RELOAD_SECONDS so that unknown ids cannot hammer the database. True when it
        reloaded."""
        now = time.monotonic()
        if now - self._last_miss_reload < MISS_RELOAD_SECONDS:
            return False
        self._last_miss_reload = now
        await self.reload()
        return True

    async def changed(self) -> None:
        """After a write: reload here at once, and tell the other replicas."""
        await self.reload()
        try:
            await self.cache.publish(CHANNEL, b"changed")
        except Exception:  # the periodic refresh still converges
            log.warning(
                "could not publish a registry change; other replicas see it within %gs",
                self.settings.llm_registry_refresh_seconds,
                exc_info=True,
            )

    async def _follow_bus(self, subscribed: asyncio.Event) -> None:
        while True:
            try:
                async with self.cache.subscribe(CHANNEL) as messages:
                    if subscribed.is_set():  # resubscribed: changes published meanwhile were missed
                        await self.reload()
                    subscribed.set()
                    async for _ in messages:
                        await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:
                subscribed.set()
                log.warning("registry change feed interrupted; resubscribing", exc_info=True)
                await asyncio.sleep(1)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.settings.llm_registry_refresh_seconds)
            try:
                await self.reload()
            except Exception:
                log.warning("registry refresh failed", exc_info=True)

    async def seal_stored_secrets(self) -> None:
        """Bring rows written before extra headers were secrets up to date, once: their plaintext headers are
        encrypted (names kept, values masked), and API key hints made under the older, more revealing mask are
        made again. Idempotent, so replicas starting together do no harm."""
        async with self.db.session() as session:
            for row in (await session.scalars(select(ProviderRow))).all():
                if row.extra_headers and row.extra_headers_encrypted is None:
                    headers = {str(k): str(v) for k, v in row.extra_headers.items()}
                    row.extra_headers_encrypted = self.secrets.encrypt_headers(headers)
                    row.extra_headers = mask_headers(headers)
                    log.info("encrypted the extra headers of provider %r", row.name)
                key = self.secrets.decrypt(row.api_key_encrypted) if row.api_key_encrypted else None
                if key is not None and row.api_key_hint != mask_key(key):
                    row.api_key_hint = mask_key(key)

    async def seed_local_models(self) -> None:
        """Register the built-in provider and models once per installation and make them the defaults.

        Idempotent and race-safe across replicas (unique names); a marker keeps deleted seeds deleted.
        """
        async with self.db.session() as session:
            if await session.get(MetaEntry, SEEDED_KEY) is not None:
                return
        try:
            async with self.db.session() as session:
                provider = ProviderRow(
                    name=LOCAL_PROVIDER,
                    type="local",
                    description="Built-in models, run in-process",
                    extra_headers={},
                    config={},
                    enabled=True,
                )
                session.add(provider)
                await session.flush()
                chat = ModelRow(
                    provider_id=provider.id,
                    name=LOCAL_CHAT,
                    upstream_name=local.CHAT_MODEL,
                    type="llm",
                    description="SmolLM2-135M-Instruct (Q4_1 GGUF), built in: small and fast, for trying things out",
                    context_length=self.settings.llm_local_context_tokens,
                    max_output_tokens=512,
                    online=True,
                    fallback_model_ids=[],
                    config={"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1},
                )
                embedding = ModelRow(
                    provider_id=provider.id,
                    name=LOCAL_EMBEDDING,
                    upstream_name=local.EMBEDDING_MODEL,
                    type="embedding",
                    description="all-MiniLM-L6-v2 sentence embeddings, built in",
                    context_length=256,
                    embedding_dimensions=384,
                    online=True,
                    fallback_model_ids=[],
                    config={},
                )
                session.add_all([chat, embedding])
                await session.flush()
                now = utcnow()
                for use, model in (("chat", chat), ("flow", chat), ("title", chat), ("knowledge_embedding", embedding)):
                    if await session.get(DefaultRow, use) is None:
                        session.add(DefaultRow(purpose=use, model_id=model.id, update_time=now))
                session.add(MetaEntry(key=SEEDED_KEY, value=now.isoformat()))
            log.info("registered the built-in local models %s and %s as defaults", LOCAL_CHAT, LOCAL_EMBEDDING)
        except Exception as exc:  # another replica seeded at the same moment
            async with self.db.session() as session:
                if await session.get(MetaEntry, SEEDED_KEY) is None:
                    raise
            log.debug("local models already seeded by another replica (%s)", type(exc).__name__)
