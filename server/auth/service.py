"""AuthService: login and token refresh, self-registration with invite codes (registration.py: the rules, the
codes, the optional lockout); users and API keys are its other half (auth/users.py).

Login answers alike for an unknown user, a wrong password and a disabled account (same message, same argon2 work),
and budgets failures per (username, client address) and per address before checking the password: an attacker is
slowed where they are, while the account's owner, elsewhere, still gets in.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

import grpc
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from typecase.server.auth import credentials, permissions, registration, sessions
from typecase.server.auth.addresses import TrustedProxies, context_client
from typecase.server.auth.authenticator import Authenticator, unauthenticated
from typecase.server.auth.bootstrap import ensure_admin
from typecase.server.auth.guard import CredentialGuard
from typecase.server.auth.membership import Memberships
from typecase.server.auth.models import InviteCodeRow, UserRow
from typecase.server.auth.ratelimit import RateLimits
from typecase.server.auth.tokens import TokenSigner
from typecase.server.auth.users import MAX_PASSWORD, UserAdmin, check_email, check_username, role_enum, user_message
from typecase.server.infra.audit import AuditLog
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import from_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger("typecase.auth")

INVITE_BUDGET = "*invite-code*"  # the failure budget that invite-code guesses spend (no username has a "*")


class AuthService(UserAdmin, auth_pb2_grpc.AuthServiceServicer):
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
        # Built here so that they are never None; the signer has no keys until start() loads them.
        self.signer = TokenSigner(db, settings.access_token_ttl_seconds, settings.signing_key_refresh_seconds)
        self.authenticator = Authenticator(
            db, self.signer, settings.api_key_cache_seconds, settings.credential_cache_max_entries
        )
        self.guard = CredentialGuard(self.authenticator, rate_limits, memberships)
        self.admin_id = ""

    async def start(self) -> None:
        await self.signer.start()
        self.admin_id = await ensure_admin(self.db, self.settings)

    async def stop(self) -> None:
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
            if user is not None and locked_for is not None:
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
            if not ok or user is None or user.disabled:
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
            role = self.settings.default_user_role
            invite_code_id = None
            if request.invite_code:
                invite = await registration.spend_invite_code(session, request.invite_code)
                if invite is None:
                    await self.rate_limits.count_login_failure(INVITE_BUDGET, client)
                    raise registration.invalid_invite()
                role, invite_code_id = invite.role, invite.id
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
                "invite_code_id": invite_code_id,
                "client": client,
            },
        )
        return await self.signed_in(auth_pb2.RegisterResponse, user, session_id, refresh)

    async def CreateInviteCode(self, request, context):
        admin = caller.require_permission("users.manage")
        invite = request.invite_code
        if invite.role not in (auth_pb2.USER_ROLE_UNSPECIFIED, auth_pb2.USER_ROLE_ADMIN, auth_pb2.USER_ROLE_USER):
            raise invalid_argument("invite_code.role", "must be USER_ROLE_ADMIN or USER_ROLE_USER")
        if invite.role == auth_pb2.USER_ROLE_ADMIN and not admin.is_admin:
            raise TypecaseError(
                grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", "only an admin may invite admins"
            )
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
            role=permissions.ROLE_ADMIN if invite.role == auth_pb2.USER_ROLE_ADMIN else self.settings.default_user_role,
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
        return auth_pb2.CreateInviteCodeResponse(invite_code=registration.invite_message(row, role_enum), code=code)

    async def ListInviteCodes(self, request, context):
        caller.require_permission("users.manage")
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
            invite_codes=[registration.invite_message(r, role_enum) for r in rows],
            next_page_token=paging.encode_token(before=rows[-1].id) if more else "",
        )

    async def DeleteInviteCode(self, request, context):
        admin = caller.require_permission("users.manage")
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
