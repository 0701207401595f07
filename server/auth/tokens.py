"""Short-lived signed access tokens (JWT, HS256).

The signing key lives in the SQL store (typecase_meta), created once by whichever replica starts first, so every
replica verifies every other replica's tokens without extra configuration.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from typecase.server.infra.sql import Database, MetaEntry

SIGNING_KEY_ENTRY = "jwt_signing_key"
ISSUER = "typecase"


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    role: str


class TokenSigner:
    def __init__(self, key: str, ttl_seconds: int):
        self._key = key
        self.ttl_seconds = ttl_seconds

    @classmethod
    async def load(cls, db: Database, ttl_seconds: int) -> TokenSigner:
        async with db.session() as session:
            entry = await session.get(MetaEntry, SIGNING_KEY_ENTRY)
            if entry is None:
                session.add(MetaEntry(key=SIGNING_KEY_ENTRY, value=secrets.token_urlsafe(48)))
                try:
                    await session.commit()
                except IntegrityError:  # another replica created it first: use theirs
                    await session.rollback()
            entry = (await session.scalars(select(MetaEntry).where(MetaEntry.key == SIGNING_KEY_ENTRY))).one()
            return cls(entry.value, ttl_seconds)

    def issue(self, user_id: str, role: str) -> str:
        now = int(time.time())
        claims = {"sub": user_id, "role": role, "iss": ISSUER, "iat": now, "exp": now + self.ttl_seconds}
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> AccessClaims:
        """Raises jwt.ExpiredSignatureError or jwt.InvalidTokenError."""
        claims = jwt.decode(token, self._key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]})
        return AccessClaims(claims["sub"], claims.get("role", "user"))


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2
