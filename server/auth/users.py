"""AuthService's user administration and API keys (the servicer's other half is auth/service.py: sign-in,
registration, invite codes). Holders of users.manage create, change and delete users and assign roles; holders of
users.read look users up; everyone sees and edits themselves (display name, email, password) and their own keys.

A role assignment goes through auth/roles.py: the role must exist and the caller must hold every permission it
grants, and no one below admin changes an account whose role holds more than theirs (resetting an admin's password
would be taking the account over). The user's cached access is cleared (auth/membership.py), so a new role holds on
their next call on every replica.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import limits
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from typecase.server.auth import credentials, permissions, registration, scopes, sessions
from typecase.server.auth.addresses import TrustedProxies, context_client
from typecase.server.auth.authenticator import Authenticator
from typecase.server.auth.membership import Memberships
from typecase.server.auth.models import ApiKeyRow, UserRow
from typecase.server.auth.ratelimit import RateLimits
from typecase.server.auth.roles import assignable_role, check_grantable, role_permissions
from typecase.server.infra.audit import AuditLog
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import from_timestamp, to_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.server.rpc.fields import mask_paths
from typecase.v1 import auth_pb2

# Matched whole (fullmatch): with re.match, "$" also matches before a trailing newline.
USERNAME = re.compile(r"[A-Za-z0-9._-]{3,64}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
USER_FIELDS = {"display_name", "email", "role", "role_name", "disabled", "password"}
SELF_EDITABLE_USER_FIELDS = {"display_name", "email", "password"}
MAX_PASSWORD = registration.MAX_PASSWORD


def role_enum(role: str) -> auth_pb2.UserRole:
    return auth_pb2.USER_ROLE_ADMIN if role == permissions.ROLE_ADMIN else auth_pb2.USER_ROLE_USER


def user_message(row: UserRow) -> auth_pb2.User:
    return auth_pb2.User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        email=row.email or "",
        role=role_enum(row.role),
        role_name=row.role,
        disabled=row.disabled,
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        last_login_time=to_timestamp(row.last_login_time),
    )


def api_key_message(row: ApiKeyRow) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        prefix=row.prefix,
        expire_time=to_timestamp(row.expire_time),
        last_used_time=to_timestamp(row.last_used_time),
        revoked=row.revoke_time is not None,
        revoke_time=to_timestamp(row.revoke_time),
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
        scopes=[s for s in scopes.SCOPES if s in scopes.decode(row.scopes)],
        resources=row.resources or [],
        actions=(row.actions or "").split(),
        rate_limit=row.rate_limit or "",
    )


def check_username(username: str, field: str) -> None:
    if not USERNAME.fullmatch(username):
        raise invalid_argument(field, "3 to 64 letters, digits, '.', '_' or '-'")


def check_email(email: str, field: str = "user.email") -> None:
    if email and not EMAIL.fullmatch(email):
        raise invalid_argument(field, "not an email address")


class UserAdmin:
    """The user and API-key RPCs of AuthService (a mixin: auth/service.py holds the state they use)."""

    db: Database
    audit: AuditLog
    settings: Any
    proxies: TrustedProxies
    rate_limits: RateLimits
    passwords: registration.PasswordRules
    memberships: Memberships | None
    authenticator: Authenticator

    async def _password_budget(self, username: str, client: str) -> None: ...

    # -- users -----------------------------------------------------------------------------------------------
    def _role_from(self, user: auth_pb2.User) -> str:
        """The role `user` names: role_name, else the role enum (USER_ROLE_USER: the default role)."""
        if user.role_name:
            return user.role_name
        if user.role not in (auth_pb2.USER_ROLE_UNSPECIFIED, auth_pb2.USER_ROLE_ADMIN, auth_pb2.USER_ROLE_USER):
            raise invalid_argument("user.role", "must be USER_ROLE_ADMIN or USER_ROLE_USER (or set user.role_name)")
        return permissions.ROLE_ADMIN if user.role == auth_pb2.USER_ROLE_ADMIN else self.settings.default_user_role

    async def CreateUser(self, request, context):
        admin = caller.require_permission("users.manage")
        user = request.user
        check_username(user.username, "user.username")
        self.passwords.check(user.password, "user.password")
        check_email(user.email)
        row = UserRow(
            username=user.username,
            display_name=user.display_name or user.username,
            email=user.email or None,
            role=self._role_from(user),
            password_hash=await credentials.hash_password_off_loop(user.password),
            disabled=user.disabled,
        )
        async with self.db.session() as session:
            await assignable_role(session, row.role, "user.role_name" if user.role_name else "user.role")
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                raise TypecaseError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "ALREADY_EXISTS",
                    "a user with this username (in any letter case) or email already exists",
                ) from None
        await self.audit.record(
            "user.create",
            actor_id=admin.user_id,
            resource_type="user",
            resource_id=row.id,
            detail={"username": row.username, "role": row.role},
        )
        return auth_pb2.CreateUserResponse(user=user_message(row))

    async def ListUsers(self, request, context):
        me = caller.current()
        if not (me.can("users.read") or me.can("users.manage")):
            caller.require_permission("users.read")
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        stmt = select(UserRow)
        if request.keyword:
            like = f"%{request.keyword.lower()}%"
            stmt = stmt.where(
                or_(
                    func.lower(UserRow.username).like(like),
                    func.lower(UserRow.display_name).like(like),
                    func.lower(UserRow.email).like(like),
                )
            )
        if request.role == auth_pb2.USER_ROLE_ADMIN:
            stmt = stmt.where(UserRow.role == permissions.ROLE_ADMIN)
        elif request.role:
            stmt = stmt.where(UserRow.role != permissions.ROLE_ADMIN)
        if not request.show_disabled:
            stmt = stmt.where(UserRow.disabled.is_(False))
        async with self.db.session() as session:
            total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
            if position:
                stmt = stmt.where(UserRow.id > position.get("after", ""))
            rows = list((await session.scalars(stmt.order_by(UserRow.id).limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return auth_pb2.ListUsersResponse(
            users=[user_message(r) for r in rows],
            next_page_token=paging.encode_token(after=rows[-1].id) if more else "",
            total_size=total or 0,
        )

    async def _visible_user(self, session, user_id: str) -> UserRow:
        me = caller.current()
        row = await session.get(UserRow, user_id)
        if row is None or not (me.user_id == user_id or me.can("users.read") or me.can("users.manage")):
            raise not_found("user", user_id)
        return row

    async def GetUser(self, request, context):
        return auth_pb2.GetUserResponse(user=await self.get_user(request.user_id))

    async def get_user(self, user_id: str) -> auth_pb2.User:
        """Python API for other domains (rpc.ports.Users): a user the caller may see."""
        async with self.db.session() as session:
            return user_message(await self._visible_user(session, user_id))

    async def UpdateUser(self, request, context):
        me = caller.current()
        user = request.user
        # current_password comes with a password change as its proof: it is not a field to update.
        paths = mask_paths(request.update_mask, user, USER_FIELDS | {"current_password"}, "user")
        paths.discard("current_password")
        if paths - SELF_EDITABLE_USER_FIELDS:
            caller.require_permission("users.manage")  # role, role_name, disabled
        if me.user_id == user.id and paths & {"role", "role_name", "disabled"}:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "INVALID_ARGUMENT",
                "you cannot change your own role or disable yourself",
            )
        async with self.db.session() as session:
            row = await self._visible_user(session, user.id)
            before_role = row.role
            if row.id != me.user_id:
                caller.require_permission("users.manage")  # users.read alone only sees others
                # Changing an account whose role holds more than the caller's would be taking it over.
                check_grantable(me, await role_permissions(session, row.role) or (), f"user {row.username!r}'s role")
            if "display_name" in paths:
                row.display_name = user.display_name
            if "email" in paths:
                check_email(user.email)
                row.email = user.email or None
            if paths & {"role", "role_name"}:
                if "role" in paths and "role_name" not in paths and not user.role:
                    raise invalid_argument("user.role", "must be USER_ROLE_ADMIN or USER_ROLE_USER")
                field = "user.role_name" if user.role_name else "user.role"
                row.role = await assignable_role(session, self._role_from(user), field)
            if "disabled" in paths:
                row.disabled = user.disabled
            if "password" in paths:
                self.passwords.check(user.password, "user.password")
                if me.user_id == row.id and row.password_hash:
                    await self._check_current_password(row, user.current_password, context)
                row.password_hash = await credentials.hash_password_off_loop(user.password)
                registration.Lockout.succeeded(row)  # a new password (an admin's reset) unlocks the account
                await sessions.revoke_user_sessions(session, row.id, sessions.PASSWORD_CHANGED)
            try:
                await session.commit()
            except IntegrityError:
                raise TypecaseError(
                    grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", "a user with this email already exists"
                ) from None
        self.authenticator.forget_user(row.id)
        detail: dict = {"fields": sorted(paths)}
        if row.role != before_role:
            if self.memberships is not None:
                await self.memberships.forget(row.id)
            detail |= {"before": {"role": before_role}, "after": {"role": row.role}}
        await self.audit.record(
            "user.update", actor_id=me.user_id, resource_type="user", resource_id=row.id, detail=detail
        )
        return auth_pb2.UpdateUserResponse(user=user_message(row))

    async def _check_current_password(self, row: UserRow, current_password: str, context) -> None:
        """Changing one's own password proves the current one (a stolen token or key alone cannot take the
        account over), under the same failure budget as a login."""
        if not current_password:
            raise invalid_argument("current_password", "required to change your own password")
        client = context_client(context, self.proxies)
        await self._password_budget(row.username_lower, client)
        if not await credentials.verify_password_off_loop(row.password_hash, current_password[:MAX_PASSWORD]):
            await self.rate_limits.count_login_failure(row.username_lower, client)
            raise invalid_argument("current_password", "does not match your current password")

    async def DeleteUser(self, request, context):
        admin = caller.require_permission("users.manage")
        if request.user_id == admin.user_id:
            raise TypecaseError(grpc.StatusCode.FAILED_PRECONDITION, "INVALID_ARGUMENT", "you cannot delete yourself")
        async with self.db.session() as session:
            row = await session.get(UserRow, request.user_id)
            if row is None:
                raise not_found("user", request.user_id)
            check_grantable(admin, await role_permissions(session, row.role) or (), f"user {row.username!r}'s role")
            await session.delete(row)
            await session.commit()
        self.authenticator.forget_user(request.user_id)
        await self.audit.record(
            "user.delete", actor_id=admin.user_id, resource_type="user", resource_id=request.user_id
        )
        return auth_pb2.DeleteUserResponse()

    # -- API keys --------------------------------------------------------------------------------------------
    async def CreateApiKey(self, request, context):
        me = caller.current()
        key = request.api_key
        name = key.name.strip()
        if not 1 <= len(name) <= 128:
            raise invalid_argument("api_key.name", "1 to 128 characters")
        owner_id = key.owner_id or me.user_id
        expire_time = from_timestamp(key.expire_time, key.HasField("expire_time"))
        if expire_time is not None and expire_time <= utcnow():
            raise invalid_argument("api_key.expire_time", "must be in the future")
        key_scopes = scopes.clean_scopes(key.scopes)
        resources, actions = scopes.clean_restriction(key.resources, key.actions)
        rate = key.rate_limit.strip()
        if rate:
            try:
                limits.parse(rate)
            except ValueError:
                raise invalid_argument("api_key.rate_limit", "a rate such as '60/minute' or '1000/day'") from None
            if len(rate) > 32:
                raise invalid_argument("api_key.rate_limit", "at most 32 characters")
        async with self.db.session() as session:
            # A user may only create keys for themselves; admins for anyone (users.read sees others, never acts
            # as them).
            if await session.get(UserRow, owner_id) is None or not (me.is_admin or owner_id == me.user_id):
                raise not_found("user", owner_id)
            secret = credentials.new_api_key()
            row = ApiKeyRow(
                owner_id=owner_id,
                name=name,
                prefix=secret[: credentials.SHOWN_PREFIX_LENGTH],
                secret_sha256=credentials.digest(secret),
                expire_time=expire_time,
                scopes=scopes.encode(key_scopes),
                resources=resources,
                actions=" ".join(actions),
                rate_limit=rate,
            )
            session.add(row)
            await session.commit()
        await self.audit.record(
            "api_key.create",
            actor_id=me.user_id,
            resource_type="api_key",
            resource_id=row.id,
            detail={
                "owner_id": owner_id,
                "name": name,
                "scopes": key_scopes,
                "resources": resources,
                "actions": actions,
                "rate_limit": rate,
            },
        )
        return auth_pb2.CreateApiKeyResponse(api_key=api_key_message(row), secret=secret)

    async def ListApiKeys(self, request, context):
        me = caller.current()
        owner_id = request.owner_id or me.user_id
        if not (me.is_admin or owner_id == me.user_id):
            raise not_found("user", owner_id)  # others' keys: admins only, like DeleteApiKey (caller.can_see)
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        stmt = select(ApiKeyRow).where(ApiKeyRow.owner_id == owner_id)
        if not request.show_revoked:
            stmt = stmt.where(ApiKeyRow.revoke_time.is_(None))
        if position:
            stmt = stmt.where(ApiKeyRow.id > position.get("after", ""))
        async with self.db.session() as session:
            rows = list((await session.scalars(stmt.order_by(ApiKeyRow.id).limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return auth_pb2.ListApiKeysResponse(
            api_keys=[api_key_message(r) for r in rows],
            next_page_token=paging.encode_token(after=rows[-1].id) if more else "",
        )

    async def DeleteApiKey(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            row = await session.get(ApiKeyRow, request.api_key_id)
            if row is None or not caller.can_see(row.owner_id):
                raise not_found("API key", request.api_key_id)
            if row.revoke_time is None:
                row.revoke_time = utcnow()
                await session.commit()
        self.authenticator.forget_key(row.secret_sha256)
        await self.audit.record("api_key.revoke", actor_id=me.user_id, resource_type="api_key", resource_id=row.id)
        return auth_pb2.DeleteApiKeyResponse()
