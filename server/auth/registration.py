"""Who may get an account and with which password: password rules, invite codes, and the optional lockout.

Invite codes are secrets like API keys: only a SHA-256 digest and a shown prefix are stored, the code is returned
once. A code is spent with one conditional UPDATE (not expired, not revoked, uses left) inside the transaction that
inserts the user, so concurrent registrations never overspend it and a refused registration spends nothing.

The lockout is off by default: the per-address failure budgets (ratelimit.py) slow a guesser without locking the
owner out, which is what most deployments want. Some compliance regimes ask for lockout after N failures; then
the streak lives on the user row, so every replica sees it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import grpc
from sqlalchemy import select, update

from typecase.server.auth import credentials
from typecase.server.auth.models import InviteCodeRow, UserRow
from typecase.server.infra.sql import utcnow
from typecase.server.rpc.convert import to_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import auth_pb2

MAX_PASSWORD = 1024
INVITE_PREFIX = "inv_"
SHOWN_INVITE_PREFIX = 8
MAX_INVITE_USES = 10_000
CHARACTER_CLASSES = (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())


class PasswordRules:
    def __init__(self, min_length: int, required_classes: int):
        self.min_length = min_length
        self.required_classes = required_classes

    def check(self, password: str, field: str) -> None:
        if not self.min_length <= len(password) <= MAX_PASSWORD:
            raise invalid_argument(field, f"must be {self.min_length} to {MAX_PASSWORD} characters")
        mixed = sum(any(test(c) for c in password) for test in CHARACTER_CLASSES)
        if mixed < self.required_classes:
            raise invalid_argument(
                field,
                f"must mix at least {self.required_classes} of: lower-case letters, "
                "upper-case letters, digits, other characters",
            )


# -- invite codes ------------------------------------------------------------------------------------------------
def new_invite_code() -> str:
    return INVITE_PREFIX + secrets.token_urlsafe(24)


def invite_message(row: InviteCodeRow, role_enum: Callable[[str], auth_pb2.UserRole]) -> auth_pb2.InviteCode:
    return auth_pb2.InviteCode(
        id=row.id,
        note=row.note,
        role=role_enum(row.role),
        max_uses=row.max_uses,
        use_count=row.use_count,
        expire_time=to_timestamp(row.expire_time),
        prefix=row.prefix,
        creator_id=row.creator_id or "",
        revoked=row.revoke_time is not None,
        create_time=to_timestamp(row.create_time),
    )


def check_max_uses(max_uses: int) -> int:
    if not 0 <= max_uses <= MAX_INVITE_USES:
        raise invalid_argument("invite_code.max_uses", f"must be 1 to {MAX_INVITE_USES} (0: 1)")
    return max_uses or 1


async def spend_invite_code(session, code: str) -> InviteCodeRow | None:
    """Counts one use of `code` if it may still register someone; its row, or None when it may not. Runs in the
    caller's transaction: rolled back with it."""
    now = utcnow()
    spent = await session.execute(
        update(InviteCodeRow)
        .where(
            InviteCodeRow.code_sha256 == credentials.digest(code),
            InviteCodeRow.revoke_time.is_(None),
            InviteCodeRow.expire_time > now,
            InviteCodeRow.use_count < InviteCodeRow.max_uses,
        )
        .values(use_count=InviteCodeRow.use_count + 1)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        return None
    return (
        await session.scalars(select(InviteCodeRow).where(InviteCodeRow.code_sha256 == credentials.digest(code)))
    ).one()


def invalid_invite() -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.PERMISSION_DENIED,
        "INVITE_CODE_INVALID",
        "this invite code is unknown, expired, revoked or used up",
        {"field": "invite_code"},
    )


# -- lockout -----------------------------------------------------------------------------------------------------
class Lockout:
    def __init__(self, failures: int, seconds: int):
        self.failures = failures
        self.seconds = seconds

    def locked_for(self, user: UserRow, now: datetime) -> float | None:
        """Seconds the account still refuses passwords; None when it does not."""
        if not self.failures or user.locked_until is None or user.locked_until <= now:
            return None
        return (user.locked_until - now).total_seconds()

    def failed(self, user: UserRow, now: datetime) -> None:
        if not self.failures:
            return
        user.failed_login_count = (user.failed_login_count or 0) + 1
        if user.failed_login_count >= self.failures:
            user.locked_until = now + timedelta(seconds=self.seconds)
            user.failed_login_count = 0

    @staticmethod
    def succeeded(user: UserRow) -> None:
        user.failed_login_count = 0
        user.locked_until = None
