"""Single sign-on with OpenID Connect: the authorization code flow with PKCE, by Authlib (client) and joserfc
(ID token signature and claims), so nothing of the protocol's security is written here.

    GET /v1/auth/oidc/login?next=/path   302 to the provider, with state, nonce and an S256 code challenge
    GET /v1/auth/oidc/callback           the provider's redirect: the code is exchanged, the ID token checked
                                         (signature from the provider's JWKS, issuer, audience, expiry, nonce), the
                                         user found by (issuer, subject) or created, and signed in

The pending login (state -> code verifier, nonce, next path) lives in the cache for oidc_login_ttl_seconds, so any
replica can finish it, and is spent once. The signed-in answer is a redirect to `next` with the tokens in the URL
fragment (browsers never send a fragment to a server), or, for `Accept: application/json`, the LoginResponse body.
Roles follow the groups claim on every sign-in (oidc_admin_groups, oidc_role_map) and so, with oidc_sync_groups,
do Typecase group memberships (auth/oidc_sync.py).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from google.protobuf.json_format import MessageToDict
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from typecase.server.auth import oidc_sync, sessions
from typecase.server.auth.models import UserRow
from typecase.server.infra.sql import utcnow
from typecase.v1 import auth_pb2

log = logging.getLogger("typecase.auth.oidc")

PENDING_KEY = "oidc:pending:"
USERNAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class OidcError(Exception):
    """A sign-in that cannot finish; the message is safe to show."""


class Provider:
    """The identity provider's discovery document and keys, fetched once and refreshed on an unknown key id."""

    def __init__(self, issuer: str, timeout: float):
        self.issuer = issuer.rstrip("/")
        self.timeout = timeout
        self.metadata: dict[str, Any] | None = None
        self.keys: KeySet | None = None

    async def discover(self) -> dict[str, Any]:
        if self.metadata is None:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                reply = await http.get(f"{self.issuer}/.well-known/openid-configuration")
                reply.raise_for_status()
                metadata = reply.json()
            if metadata.get("issuer", "").rstrip("/") != self.issuer:
                raise OidcError(
                    f"the provider's discovery document names issuer {metadata.get('issuer')!r}, not {self.issuer!r}"
                )
            self.metadata = metadata
        return self.metadata

    async def key_set(self, refresh: bool = False) -> KeySet:
        if self.keys is None or refresh:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                reply = await http.get((await self.discover())["jwks_uri"])
                reply.raise_for_status()
                self.keys = KeySet.import_key_set(reply.json())
        return self.keys


class OidcSignIn:
    def __init__(self, auth, cache, settings):
        self.auth = auth  # AuthService: the database, the token signer, the audit log
        self.cache = cache
        self.settings = settings
        self.provider = Provider(settings.oidc_issuer, settings.oidc_timeout_seconds)

    @property
    def client_secret(self) -> str | None:
        return self.settings.secret("oidc_client_secret")

    def client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.oidc_client_id,
            client_secret=self.client_secret,
            scope=self.settings.oidc_scopes,
            redirect_uri=self.settings.oidc_redirect_uri,
            code_challenge_method="S256",
            timeout=self.settings.oidc_timeout_seconds,
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
        )

    # -- GET /v1/auth/oidc/login -----------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        try:
            metadata = await self.provider.discover()
        except (httpx.HTTPError, ValueError, KeyError, OidcError) as error:
            log.warning("OIDC discovery at %s failed: %s", self.provider.issuer, error)
            return problem(502, "the identity provider cannot be reached; try again later")
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        next_path = safe_next(request.query_params.get("next", "/"))
        await self.cache.set(
            PENDING_KEY + state,
            json.dumps({"verifier": verifier, "nonce": nonce, "next": next_path}),
            ttl=self.settings.oidc_login_ttl_seconds,
        )
        async with self.client() as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier
            )
        return RedirectResponse(url, status_code=302)

    # -- GET /v1/auth/oidc/callback --------------------------------------------------------------------------
    async def callback(self, request: Request) -> Response:
        params = request.query_params
        if "error" in params:
            return problem(
                401, f"the identity provider refused the sign-in: {params.get('error_description') or params['error']}"
            )
        state, code = params.get("state", ""), params.get("code", "")
        raw = await self.cache.get(PENDING_KEY + state) if state else None
        if raw is None or not await self.cache.delete(PENDING_KEY + state):
            return problem(400, "this sign-in link is unknown, expired or already used: start again")
        pending = json.loads(raw)
        if not code:
            return problem(400, "the identity provider sent no authorization code")
        try:
            claims = await self._verified_claims(code, pending)
            user, session_id, refresh = await self._sign_in(claims)
        except OidcError as error:
            return problem(401, str(error))
        except httpx.HTTPError as error:
            log.warning("OIDC token exchange with %s failed: %s", self.provider.issuer, error)
            return problem(502, "the identity provider cannot be reached; try again later")
        answer = await self.auth.signed_in(auth_pb2.LoginResponse, user, session_id, refresh)
        body = MessageToDict(answer, preserving_proto_field_name=True)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(body)
        fragment = urlencode({k: body[k] for k in ("access_token", "refresh_token", "expires_in", "token_type")})
        return RedirectResponse(f"{pending['next']}#{fragment}", status_code=302)

    async def _verified_claims(self, code: str, pending: dict[str, str]) -> dict[str, Any]:
        metadata = await self.provider.discover()
        async with self.client() as client:
            try:
                token = await client.fetch_token(
                    metadata["token_endpoint"], code=code, code_verifier=pending["verifier"]
                )
            except Exception as error:  # authlib raises OAuthError and friends for the provider's refusals
                if isinstance(error, httpx.HTTPError):
                    raise
                raise OidcError(f"the identity provider refused the code: {error}") from None
        id_token = token.get("id_token")
        if not id_token:
            raise OidcError("the identity provider returned no ID token (is the 'openid' scope granted?)")
        try:
            try:
                decoded = jwt.decode(id_token, await self.provider.key_set())
            except JoseError:  # perhaps signed with a key published since: refresh once
                decoded = jwt.decode(id_token, await self.provider.key_set(refresh=True))
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.provider.issuer},
                aud={"essential": True, "value": self.settings.oidc_client_id},
                sub={"essential": True},
                nonce={"essential": True, "value": pending["nonce"]},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as error:
            raise OidcError(f"the ID token is not valid: {error}") from None
        return decoded.claims

    async def _sign_in(self, claims: dict[str, Any]) -> tuple[UserRow, str, str]:
        subject = f"{self.provider.issuer}|{claims['sub']}"
        groups = claims.get(self.settings.oidc_groups_claim) or []
        groups = [groups] if isinstance(groups, str) else [str(g) for g in groups]
        synced: dict[str, list[str]] = {}
        async with self.auth.db.session() as session:
            user = (await session.scalars(select(UserRow).where(UserRow.external_subject == subject))).first()
            created = user is None
            role = await oidc_sync.mapped_role(session, self.settings, groups, None if created else user.role)
            before_role = None if created else user.role
            if created:
                user = UserRow(
                    username=await self._free_username(session, claims),
                    external_subject=subject,
                    display_name=str(claims.get("name") or claims.get("preferred_username") or ""),
                    email=None,
                    role=role,
                    password_hash=None,
                )
                session.add(user)
                await session.flush()
            elif user.disabled:
                raise OidcError("this account is disabled")
            user.role = role = role or user.role
            user.external_groups = groups
            if self.settings.oidc_sync_groups:
                synced = await oidc_sync.sync_groups(session, self.settings, user.id, groups)
            user.last_login_time = utcnow()
            session_id, refresh = await sessions.open_session(session, user.id, self.settings.refresh_token_ttl_seconds)
        self.auth.authenticator.forget_user(user.id)  # a changed role applies to API keys at once
        if self.auth.memberships is not None:
            await self.auth.memberships.forget(user.id)  # and so do a new role and synced groups, on every replica
        detail = {"via": "oidc", "issuer": self.provider.issuer, "role": role, "groups": groups} | synced
        if before_role is not None and before_role != role:
            detail |= {"before": {"role": before_role}, "after": {"role": role}}
        await self.auth.audit.record(
            "user.create" if created else "login",
            actor_id=user.id,
            resource_type="user",
            resource_id=user.id,
            detail=detail,
        )
        return user, session_id, refresh

    async def _free_username(self, session, claims: dict[str, Any]) -> str:
        wanted = str(claims.get("preferred_username") or str(claims.get("email") or "").split("@")[0] or claims["sub"])
        base = (USERNAME_CHARS.sub("-", wanted).strip("-.") or "user")[:56].ljust(3, "0")
        name = base
        while (await session.scalars(select(UserRow.id).where(UserRow.username_lower == name.lower()))).first():
            name = f"{base}-{secrets.token_hex(3)}"
        return name


def safe_next(path: str) -> str:
    """Only a path on this server: never an absolute URL (an open redirect would hand tokens to another site)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def oidc_routes(auth, cache, settings) -> list[Route]:
    if not settings.oidc_issuer:
        return []
    sign_in = OidcSignIn(auth, cache, settings)
    return [
        Route("/v1/auth/oidc/login", sign_in.login, methods=["GET"]),
        Route("/v1/auth/oidc/callback", sign_in.callback, methods=["GET"]),
    ]
