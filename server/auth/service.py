"""AuthService: login and token refresh, users (admins manage them), API keys (each user manages their own), and
self-registration with invite codes (registration.py: the rules, the codes, the optional lockout).

Login answers alike for an unknown user, a wrong password and a disabled account (same message, same argon2 work),
and budgets failures per (username, client address) and per address before checking the password: an attacker is
slowed where they are, while the account's owner, elsewhere, still gets in.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta

import grpc
import limits
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from typecase.server.auth import credentials, registration, scopes, sessions
from typecase.server.auth.addresses import TrustedProxies, context_client
from typecase.server.auth.authenticator import Authenticator, unauthenticated
from typecase.server.auth.bootstrap import ensure_admin
from typecase.server.auth.guard import CredentialGuard
from typecase.server.auth.membership import Memberships
from typecase.server.auth.models import ApiKeyRow, InviteCodeRow, UserRow
from typecase.server.auth.ratelimit import RateLimits
from typecase.server.auth.tokens import TokenSigner
from typecase.server.infra.audit import AuditLog
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import from_timestamp, to_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger("typecase.auth")

# Matched whole (fullmatch): with re.match, "$" also matches before a trailing newline.
USERNAME = re.compile(r"[A-Za-z0-9._-]{3,64}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
MAX_PASSWORD = registration.MAX_PASSWORD
ROLE_TO_PROTO = {"admin": auth_pb2.USER_ROLE_ADMIN, "user": auth_pb2.USER_ROLE_USER}
PROTO_TO_ROLE = {v: k for k, v in ROLE_TO_PROTO.items()}
USER_FIELDS = {"display_name", "email", "role", "disabled", "password"}
SELF_EDITABLE_USER_FIELDS = {"display_name", "email", "password"}
INVITE_BUDGET = "*invite-code*"  # the failure budget that invite-code guesses spend (no username has a "*")


def user_message(row: UserRow) -> auth_pb2.User:
    return auth_pb2.User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        email=row.email or "",
        role=ROLE_TO_PROTO.get(row.role, auth_pb2.USER_ROLE_USER),
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


def mask_paths(mask, message, allowed: set[str], field_prefix: str) -> set[str]:
    """The fields an update touches: the mask's paths, or the non-default fields when the mask is empty."""
    paths = set(mask.paths) if mask.paths else {f.name for f, _ in message.ListFields()} - {"id"}
    paths.discard("current_password")  # a proof that comes with a password change, not a field to update
    unknown = paths - allowed
    if unknown:
        raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a {field_prefix}")
    return paths


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self, db: Database, audit: AuditLog, rate_limits: RateLimits, settings, memberships: Memberships | None = None
    ):
        self.db = db
        self.memberships = memberships
        self.audit = audit
        self.rate_limits = rate_limits
        self.settings = settings
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.passwords = registration.PasswordRules(
            settings.password_min_length, settings.password_required_character_classes
        )
        self.lockout = registration.Lockout(settings.account_lockout_failures, settings.account_lockout_seconds)
        self.signer: TokenSigner | None = None
        self.authenticator: Authenticator | None = None
        self.guard: CredentialGuard | None = None
        self.admin_id = ""

    async def start(self) -> None:
        self.signer = await TokenSigner.load(
            self.db, self.settings.access_token_ttl_seconds, self.settings.signing_key_refresh_seconds
        )
        self.authenticator = Authenticator(
            self.db, self.signer, self.settings.api_key_cache_seconds, self.settings.credential_cache_max_entries
        )
        self.guard = CredentialGuard(self.authenticator, self.rate_limits, self.memberships)
        self.admin_id = await ensure_admin(self.db, self.settings)

    async def stop(self) -> None:
        if self.authenticator is not None:
            await self.authenticator.close()

    # -- login -----------------------------------------------------------------------------------------------
    async def _password_budget(self, username: str, client: str) -> None:
        """Refuse before the password is checked when this username from this address, or this address, has
        used up its failures: a refused guess teaches nothing, and nobody elsewhere is affected."""
        wait = await self.rate_limits.login_retry_after(username, client)
        if wait is not None:
            await self.audit.record(
                "login",
                actor_id=None,
                resource_type="user",
                resource_id=username,
                outcome="throttled",
                detail={"client": client},
            )
            raise TypecaseError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                f"too many failed logins from this address; retry in {math.ceil(wait)}s",
                {"limit": "login failures"},
                retry_after=wait,
            )

    async def Login(self, request, context):
        username = request.username.strip().lower()
        client = context_client(context, self.proxies)
        await self._password_budget(username, client)
        async with self.db.session() as session:
            user = (await session.scalars(select(UserRow).where(UserRow.username_lower == username))).first()
            now = utcnow()
            locked_for = self.lockout.locked_for(user, now) if user else None
            if locked_for is not None:
                await self.audit.record(
                    "login",
                    actor_id=user.id,
                    resource_type="user",
                    resource_id=username,
                    outcome="locked",
                    detail={"client": client},
                )
                raise TypecaseError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "ACCOUNT_LOCKED",
                    f"this account is locked after repeated failed logins; retry in "
                    f"{math.ceil(locked_for)}s or ask an admin to reset its password",
                    {"retry_after_seconds": str(math.ceil(locked_for))},
                    retry_after=locked_for,
                )
            ok = await credentials.verify_password_off_loop(
                user.password_hash if user else None, request.password[:MAX_PASSWORD]
            )
            if not ok or user.disabled:
                if user is not None and not ok:
                    self.lockout.failed(user, now)
                    await session.commit()
                await self.rate_limits.count_login_failure(username, client)
                await self.audit.record(
                    "login",
                    actor_id=user.id if user else None,
                    resource_type="user",
                    resource_id=username,
                    outcome="denied",
                    detail={"client": client},
                )
                raise unauthenticated("wrong username or password", "INVALID_CREDENTIALS")
            user.last_login_time = now
            self.lockout.succeeded(user)
            session_id, refresh = await sessions.open_session(session, user.id, self.settings.refresh_token_ttl_seconds)
        await self.rate_limits.clear_login_failures(username, client)
        await self.audit.record("login", actor_id=user.id, resource_type="user", resource_id=user.id)
        return await self.signed_in(auth_pb2.LoginResponse, user, session_id, refresh)

    async def signed_in(self, response_type, user: UserRow, session_id: str, refresh: str):
        """The tokens of a new sign-in (Login, Register, single sign-on), as `response_type`."""
        await self.signer.refresh()
        return response_type(
            access_token=self.signer.issue(user.id, user.role, session_id),
            token_type="Bearer",
            expires_in=self.settings.access_token_ttl_seconds,
            refresh_token=refresh,
            refresh_expires_in=self.settings.refresh_token_ttl_seconds,
            user=user_message(user),
        )

    # -- self-registration -----------------------------------------------------------------------------------
    async def Register(self, request, context):
        mode = self.settings.auth_self_registration
        if mode == "off":
            raise TypecaseError(
                grpc.StatusCode.PERMISSION_DENIED,
                "REGISTRATION_CLOSED",
                "self-registration is off on this server: ask an admin for an account",
            )
        if mode == "invite" and not request.invite_code:
            raise TypecaseError(
                grpc.StatusCode.PERMISSION_DENIED,
                "REGISTRATION_CLOSED",
                "registration on this server needs an invite code",
                {"field": "invite_code"},
            )
        check_username(request.username, "username")
        self.passwords.check(request.password, "password")
        check_email(request.email, "email")
        client = context_client(context, self.proxies)
        await self._password_budget(INVITE_BUDGET, client)  # invite codes are guessed like passwords
        password_hash = await credentials.hash_password_off_loop(request.password)
        async with self.db.session() as session:
            role = "user"
            if request.invite_code:
                invite = await registration.spend_invite_code(session, request.invite_code)
                if invite is None:
                    await self.rate_limits.count_login_failure(INVITE_BUDGET, client)
                    raise registration.invalid_invite()
                role = invite.role
            user = UserRow(
                username=request.username,
                display_name=request.display_name or request.username,
                email=request.email or None,
                role=role,
                password_hash=password_hash,
            )
            session.add(user)
            try:
                await session.flush()
            except IntegrityError:
                raise TypecaseError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "ALREADY_EXISTS",
                    "a user with this username (in any letter case) or email already exists",
                    {"field": "username"},
                ) from None
            user.last_login_time = utcnow()
            session_id, refresh = await sessions.open_session(session, user.id, self.settings.refresh_token_ttl_seconds)
        await self.audit.record(
            "user.register",
            actor_id=user.id,
            resource_type="user",
            resource_id=user.id,
            detail={
                "username": user.username,
                "role": role,
                "invite_code_id": invite.id if request.invite_code else None,
                "client": client,
            },
        )
        return await self.signed_in(auth_pb2.RegisterResponse, user, session_id, refresh)

    async def CreateInviteCode(self, request, context):
        admin = caller.require_admin()
        invite = request.invite_code
        if invite.role and invite.role not in PROTO_TO_ROLE:
            raise invalid_argument("invite_code.role", "must be USER_ROLE_ADMIN or USER_ROLE_USER")
        if len(invite.note) > 255:
            raise invalid_argument("invite_code.note", "at most 255 characters")
        expire_time = from_timestamp(invite.expire_time, invite.HasField("expire_time"))
        if expire_time is not None and expire_time <= utcnow():
            raise invalid_argument("invite_code.expire_time", "must be in the future")
        code = registration.new_invite_code()
        row = InviteCodeRow(
            code_sha256=credentials.digest(code),
            prefix=code[: registration.SHOWN_INVITE_PREFIX],
            note=invite.note,
            role=PROTO_TO_ROLE.get(invite.role, "user"),
            max_uses=registration.check_max_uses(invite.max_uses),
            use_count=0,
            creator_id=admin.user_id,
            expire_time=expire_time or utcnow() + timedelta(seconds=self.settings.auth_invite_code_ttl_seconds),
        )
        async with self.db.session() as session:
            session.add(row)
            await session.commit()
        await self.audit.record(
            "invite_code.create",
            actor_id=admin.user_id,
            resource_type="invite_code",
            resource_id=row.id,
            detail={"role": row.role, "max_uses": row.max_uses, "note": row.note},
        )
        return auth_pb2.CreateInviteCodeResponse(invite_code=registration.invite_message(row, ROLE_TO_PROTO), code=code)

    async def ListInviteCodes(self, request, context):
        caller.require_admin()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token)
        stmt = select(InviteCodeRow)
        if not request.show_revoked:
            stmt = stmt.where(InviteCodeRow.revoke_time.is_(None))
        if position:
            stmt = stmt.where(InviteCodeRow.id < position.get("before", ""))
        async with self.db.session() as session:
            rows = list((await session.scalars(stmt.order_by(InviteCodeRow.id.desc()).limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return auth_pb2.ListInviteCodesResponse(
            invite_codes=[registration.invite_message(r, ROLE_TO_PROTO) for r in rows],
            next_page_token=paging.encode_token(before=rows[-1].id) if more else "",
        )

    async def DeleteInviteCode(self, request, context):
        admin = caller.require_admin()
        async with self.db.session() as session:
            row = await session.get(InviteCodeRow, request.invite_code_id)
            if row is None:
                raise not_found("invite code", request.invite_code_id)
            if row.revoke_time is None:
                row.revoke_time = utcnow()
                await session.commit()
        await self.audit.record(
            "invite_code.revoke", actor_id=admin.user_id, resource_type="invite_code", resource_id=row.id
        )
        return auth_pb2.DeleteInviteCodeResponse()

    async def RefreshToken(self, request, context):
        outcome = await sessions.refresh(
            self.db,
            request.refresh_token,
            self.settings.refresh_token_ttl_seconds,
            self.settings.refresh_token_reuse_grace_seconds,
        )
        if isinstance(outcome, sessions.ReuseDetected):
            self.authenticator.forget_session(outcome.session_id)
            await self.audit.record(
                "session.revoke",
                actor_id=None,
                resource_type="user",
                resource_id=outcome.user_id,
                outcome="reuse",
                detail={"session_id": outcome.session_id, "client": context_client(context, self.proxies)},
            )
            raise unauthenticated(
                "refresh token already used: this sign-in is revoked everywhere; log in again", "TOKEN_EXPIRED"
            )
        await self.signer.refresh()
        return auth_pb2.RefreshTokenResponse(
            access_token=self.signer.issue(outcome.user.id, outcome.user.role, outcome.session_id),
            token_type="Bearer",
            expires_in=self.settings.access_token_ttl_seconds,
            refresh_token=outcome.refresh_token,
            refresh_expires_in=self.settings.refresh_token_ttl_seconds,
        )

    async def GetMe(self, request, context):
        me = caller.current()
        async with self.db.session() as session:
            user = await session.get(UserRow, me.user_id)
        if user is None:
            raise not_found("user", me.user_id)
        return auth_pb2.GetMeResponse(user=user_message(user), api_key_id=me.api_key_id or "")

    # -- users -----------------------------------------------------------------------------------------------
    async def CreateUser(self, request, context):
        admin = caller.require_admin()
        user = request.user
        check_username(user.username, "user.username")
        self.passwords.check(user.password, "user.password")
        check_email(user.email)
        row = UserRow(
            username=user.username,
            display_name=user.display_name or user.username,
            email=user.email or None,
            role=PROTO_TO_ROLE.get(user.role, "user"),
            password_hash=await credentials.hash_password_off_loop(user.password),
            disabled=user.disabled,
        )
        async with self.db.session() as session:
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
        caller.require_admin()
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
        if request.role:
            stmt = stmt.where(UserRow.role == PROTO_TO_ROLE.get(request.role, "user"))
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
        if row is None or not (me.is_admin or me.user_id == user_id):
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
        paths = mask_paths(request.update_mask, user, USER_FIELDS, "user")
        if not me.is_admin and paths - SELF_EDITABLE_USER_FIELDS:
            raise TypecaseError(
                grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", "only an admin may change role or disabled"
            )
        if me.user_id == user.id and paths & {"role", "disabled"}:
            raise TypecaseError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "INVALID_ARGUMENT",
                "you cannot change your own role or disable yourself",
            )
        async with self.db.session() as session:
            row = await self._visible_user(session, user.id)
            if "display_name" in paths:
                row.display_name = user.display_name
            if "email" in paths:
                check_email(user.email)
                row.email = user.email or None
            if "role" in paths:
                if user.role not in PROTO_TO_ROLE:
                    raise invalid_argument("user.role", "must be USER_ROLE_ADMIN or USER_ROLE_USER")
                row.role = PROTO_TO_ROLE[user.role]
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
        await self.audit.record(
            "user.update",
            actor_id=me.user_id,
            resource_type="user",
            resource_id=row.id,
            detail={"fields": sorted(paths)},
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
        admin = caller.require_admin()
        if request.user_id == admin.user_id:
            raise TypecaseError(grpc.StatusCode.FAILED_PRECONDITION, "INVALID_ARGUMENT", "you cannot delete yourself")
        async with self.db.session() as session:
            row = await session.get(UserRow, request.user_id)
            if row is None:
                raise not_found("user", request.user_id)
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
            await self._visible_user(session, owner_id)  # a user may only create keys for themselves
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
            raise not_found("user", owner_id)
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
