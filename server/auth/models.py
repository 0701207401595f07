"""Identity tables: users, their API keys (stored as SHA-256 digests), login sessions and their rotating refresh
tokens, and invite codes for self-registration (digests too)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, validates

from typecase.server.infra.sql import Base, JSONType, id_column, utcnow


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = id_column()
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # The username lower-cased, unique: "Alice" and "alice" are one user (kept in step by _fold_username).
    username_lower: Mapped[str] = mapped_column(String(64), index=True, unique=True, server_default="")
    display_name: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    # A built-in role (auth/permissions.py) or a custom role's name (RoleRow).
    role: Mapped[str] = mapped_column(String(64), default="builder")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_login_time: Mapped[datetime | None]
    # Failed passwords in a row and the lockout they caused (only with account_lockout_failures set).
    failed_login_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    # Accounts from single sign-on (auth/oidc.py): "<issuer>|<subject>", and the groups claim of the last sign-in.
    external_subject: Mapped[str | None] = mapped_column(String(512), unique=True)
    external_groups: Mapped[list[str] | None] = mapped_column(JSONType, default=list)

    @validates("username")
    def _fold_username(self, _key: str, username: str) -> str:
        self.username_lower = username.lower()
        return username


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = id_column()
    owner_id: Mapped[str] = mapped_column(String(26), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(64), default="api", server_default="api")  # auth/scopes.py
    # A restricted key (auth/scopes.py): "type/id" resources, space-separated actions, its own rate ("60/minute").
    resources: Mapped[list[str] | None] = mapped_column(JSONType, default=list)
    actions: Mapped[str] = mapped_column(String(64), default="", server_default="")
    rate_limit: Mapped[str] = mapped_column(String(32), default="", server_default="")
    expire_time: Mapped[datetime | None]
    last_used_time: Mapped[datetime | None]
    revoke_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LoginSessionRow(Base):
    """One password login and everything issued from it: its chain of refresh tokens and their access tokens
    (which carry its id as `sid`). Revoking it ends them all."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(String(26), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    revoke_time: Mapped[datetime | None]
    revoke_reason: Mapped[str] = mapped_column(String(32), default="")


class RefreshTokenRow(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(String(26), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str | None] = mapped_column(String(26), index=True)  # null: issued before sessions existed
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    expire_time: Mapped[datetime]
    used_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = mapped_column(default=utcnow)


class InviteCodeRow(Base):
    __tablename__ = "invite_codes"

    id: Mapped[str] = id_column()
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[str] = mapped_column(String(64), default="builder")
    max_uses: Mapped[int] = mapped_column(Integer, default=1)
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    expire_time: Mapped[datetime]
    creator_id: Mapped[str | None] = mapped_column(String(26), ForeignKey("users.id", ondelete="SET NULL"))
    revoke_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = mapped_column(default=utcnow)


class GroupRow(Base):
    """A named set of users (GroupService); grants to a group reach its members (infra/sharing.py)."""

    __tablename__ = "user_groups"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(128))
    name_lower: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @validates("name")
    def _fold_name(self, _key: str, name: str) -> str:
        self.name_lower = name.lower()
        return name


class GroupMemberRow(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True
    )
    # Indexed by user first too: the per-call lookup of a caller's groups.
    user_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    group_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)


class RoleRow(Base):
    """A custom role (auth/roles.py): a subset of the fixed permissions (auth/permissions.py). Users name their
    role in users.role; the built-in roles have no row."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    permissions: Mapped[list[str] | None] = mapped_column(JSONType, default=list)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
