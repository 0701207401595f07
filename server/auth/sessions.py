"""Login sessions and their refresh tokens (RFC 6819 §5.2.2.3, OAuth 2.0 Security BCP §4.14: rotation with reuse
detection).

A login opens a session; each refresh spends the session's current refresh token (once) and issues the next. A
refresh token spent twice means two parties hold it, one of them a thief: the whole session is revoked, which
ends the thief's tokens and the owner's alike (the owner logs in again). One exception: a second spend within
`refresh_token_reuse_grace_seconds` of the first is refused without revoking, because that is how two browser
tabs sharing one sign-in race (the console's losing tab then takes the winner's tokens).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import grpc
from sqlalchemy import select, update

from typecase.server.auth import credentials
from typecase.server.auth.models import LoginSessionRow, RefreshTokenRow, UserRow
from typecase.server.infra.sql import Database, rows_matched, utcnow
from typecase.server.rpc.errors import TypecaseError

log = logging.getLogger("typecase.auth")
REUSE = "refresh token reuse"
PASSWORD_CHANGED = "password changed"


def _ended(message: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED", message)


@dataclass
class Refreshed:
    user: UserRow
    session_id: str
    refresh_token: str


@dataclass
class ReuseDetected:
    user_id: str
    session_id: str


async def open_session(db_session, user_id: str, refresh_ttl_seconds: int) -> tuple[str, str]:
    """A new login session for the user and its first refresh token: (session id, refresh token)."""
    login = LoginSessionRow(user_id=user_id)
    db_session.add(login)
    await db_session.flush()
    return login.id, _new_refresh_token(db_session, user_id, login.id, refresh_ttl_seconds)


def _new_refresh_token(db_session, user_id: str, session_id: str, ttl_seconds: int) -> str:
    token = credentials.new_refresh_token()
    db_session.add(
        RefreshTokenRow(
            user_id=user_id,
            session_id=session_id,
            token_sha256=credentials.digest(token),
            expire_time=utcnow() + timedelta(seconds=ttl_seconds),
        )
    )
    return token


async def revoke_user_sessions(db_session, user_id: str, reason: str) -> None:
    await db_session.execute(
        update(LoginSessionRow)
        .where(LoginSessionRow.user_id == user_id, LoginSessionRow.revoke_time.is_(None))
        .values(revoke_time=utcnow(), revoke_reason=reason)
    )


async def refresh(db: Database, token: str, ttl_seconds: int, grace_seconds: float) -> Refreshed | ReuseDetected:
    """Spend `token`: the next refresh token of its session, or ReuseDetected once the session has been revoked
    for a reuse (committed). Raises TOKEN_EXPIRED / USER_DISABLED for tokens that simply do not work."""
    now = utcnow()
    async with db.session() as session:
        row = (
            await session.scalars(
                select(RefreshTokenRow).where(RefreshTokenRow.token_sha256 == credentials.digest(token))
            )
        ).first()
        if row is None or row.expire_time <= now or row.session_id is None:
            raise _ended("refresh token invalid or expired: log in again")
        login = await session.get(LoginSessionRow, row.session_id)
        if login is None or login.revoke_time is not None:
            raise _ended("this sign-in has ended (revoked): log in again")
        # Spend it: one conditional UPDATE, so two concurrent spends cannot both win on any backend.
        spent = await session.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.id == row.id, RefreshTokenRow.used_time.is_(None))
            .values(used_time=now)
        )
        if rows_matched(spent) != 1:
            await session.refresh(row, ["used_time"])
            if row.used_time is not None and now - row.used_time > timedelta(seconds=grace_seconds):
                login.revoke_time, login.revoke_reason = now, REUSE
                log.warning("refresh token of session %s (user %s) used twice: session revoked", login.id, row.user_id)
                return ReuseDetected(row.user_id, login.id)
            raise _ended("refresh token already used (another tab or client refreshed first)")
        user = await session.get(UserRow, row.user_id)
        if user is None or user.disabled:
            raise TypecaseError(grpc.StatusCode.UNAUTHENTICATED, "USER_DISABLED", "user disabled or deleted")
        return Refreshed(user, login.id, _new_refresh_token(session, user.id, login.id, ttl_seconds))
