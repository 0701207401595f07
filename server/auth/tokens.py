"""Short-lived signed access tokens (JWT, HS256), and the rotation of the key that signs them.

The signing keys live in the SQL store (typecase_meta), created once by whichever replica starts first, so every
replica verifies every other replica's tokens without extra configuration. There are at most two: the current key
signs, the previous one only verifies (until its tokens expire, access_token_ttl_seconds after the rotation).
Each token names its key in the JWT header (`kid`, a digest of the key). `typecase rotate-signing-key` rotates;
replicas re-read the keys every signing_key_refresh_seconds, and at once (at most once a second) when a token
names a key they do not know. `--drop-previous` ends every access token signed before (a leaked key); refresh
tokens are not JWTs and keep working, so clients just refresh.

A token is refused, even correctly signed, when its lifetime (exp - iat) is longer than access_token_ttl_seconds:
lowering the TTL shortens tokens already issued, and a key that signed longer-lived tokens cannot mint them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from typecase.server.infra.sql import Database, MetaEntry

SIGNING_KEY_ENTRY = "jwt_signing_key"
PREVIOUS_SIGNING_KEY_ENTRY = "jwt_previous_signing_key"
ISSUER = "typecase"
UNKNOWN_KEY_RELOAD_SECONDS = 1.0
log = logging.getLogger("typecase.auth")


class UnknownSigningKey(jwt.InvalidTokenError):
    pass


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    role: str
    session_id: str


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def _read_keys(db: Database) -> tuple[str | None, str | None]:
    async with db.session() as session:
        rows = {
            e.key: e.value
            for e in await session.scalars(
                select(MetaEntry).where(MetaEntry.key.in_([SIGNING_KEY_ENTRY, PREVIOUS_SIGNING_KEY_ENTRY]))
            )
        }
    return rows.get(SIGNING_KEY_ENTRY), rows.get(PREVIOUS_SIGNING_KEY_ENTRY)


async def rotate_signing_key(db: Database, drop_previous: bool = False) -> str:
    """Make a new current key; the current one becomes the previous (or is dropped too). Returns the new key id."""
    new_key = secrets.token_urlsafe(48)
    async with db.session() as session:
        entries = {
            e.key: e
            for e in await session.scalars(
                select(MetaEntry)
                .where(MetaEntry.key.in_([SIGNING_KEY_ENTRY, PREVIOUS_SIGNING_KEY_ENTRY]))
                .with_for_update()
            )
        }
        current = entries.get(SIGNING_KEY_ENTRY)
        previous = entries.get(PREVIOUS_SIGNING_KEY_ENTRY)
        old_value = None if current is None or drop_previous else current.value
        if previous is None:
            session.add(MetaEntry(key=PREVIOUS_SIGNING_KEY_ENTRY, value=old_value))
        else:
            previous.value = old_value
        if current is None:
            session.add(MetaEntry(key=SIGNING_KEY_ENTRY, value=new_key))
        else:
            current.value = new_key
    return key_id(new_key)


class TokenSigner:
    def __init__(self, db: Database, ttl_seconds: int, refresh_seconds: float = 30.0):
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.refresh_seconds = refresh_seconds
        self._current = ""
        self._keys: dict[str, str] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the signing key when the store has none yet, then load the keys."""
        async with self.db.session() as session:
            if await session.get(MetaEntry, SIGNING_KEY_ENTRY) is None:
                session.add(MetaEntry(key=SIGNING_KEY_ENTRY, value=secrets.token_urlsafe(48)))
                try:
                    await session.commit()
                except IntegrityError:  # another replica created it first: use theirs
                    await session.rollback()
        await self.reload()

    def _use(self, current: str, previous: str | None) -> None:
        self._current = current
        self._keys = {key_id(k): k for k in (current, previous) if k}
        self._loaded_at = time.monotonic()

    @property
    def current_key_id(self) -> str:
        return key_id(self._current)

    async def reload(self) -> None:
        current, previous = await _read_keys(self.db)
        if current:
            if self._current and key_id(current) != self.current_key_id:
                log.info("token signing key rotated: now signing with %s", key_id(current))
            self._use(current, previous)

    async def refresh(self, older_than: float | None = None) -> None:
        """Re-read the keys when the copy here is older than `older_than` seconds (default: the refresh interval).
        A store that cannot be read keeps the keys we have."""
        age = self.refresh_seconds if older_than is None else older_than
        if time.monotonic() - self._loaded_at < age:
            return
        async with self._lock:
            if time.monotonic() - self._loaded_at < age:
                return
            try:
                await self.reload()
            except Exception:
                self._loaded_at = time.monotonic()  # retry after another interval, not on every call
                log.warning("could not re-read the token signing keys; keeping the ones loaded", exc_info=True)

    def issue(self, user_id: str, role: str, session_id: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "role": role,
            "sid": session_id,
            "iss": ISSUER,
            "iat": now,
            "exp": now + self.ttl_seconds,
        }
        return jwt.encode(claims, self._current, algorithm="HS256", headers={"kid": self.current_key_id})

    def verify(self, token: str) -> AccessClaims:
        """Raises jwt.ExpiredSignatureError, UnknownSigningKey or jwt.InvalidTokenError."""
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownSigningKey("token signed with an unknown key")
        claims = jwt.decode(
            token, key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "iat", "sub", "sid"]}
        )
        if not isinstance(claims["iat"], int) or claims["exp"] - claims["iat"] > self.ttl_seconds:
            raise jwt.InvalidTokenError("token lifetime longer than access_token_ttl_seconds")
        return AccessClaims(str(claims["sub"]), str(claims.get("role", "user")), str(claims["sid"]))

    async def verify_fresh(self, token: str) -> AccessClaims:
        """verify(), re-reading the keys first when they are stale or the token names a key not known here."""
        await self.refresh()
        try:
            return self.verify(token)
        except UnknownSigningKey:
            await self.refresh(older_than=UNKNOWN_KEY_RELOAD_SECONDS)
            return self.verify(token)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2
