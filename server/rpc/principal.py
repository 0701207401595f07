"""Who is calling. The auth interceptor resolves the caller once per RPC and binds it here; domain services ask
this module, so ownership is enforced the same way over gRPC, REST and WebSocket.

Rules: a user sees and changes only what it owns; an admin sees everything; a resource the caller may not see is
reported NOT_FOUND, never PERMISSION_DENIED, so its existence does not leak. What a caller may do beyond its own
resources (manage models, create flows, ...) is its role's permission set (auth/permissions.py), checked with
`require_permission`; seeing every user's resources stays with the admin role.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import grpc

from typecase.server.auth.permissions import ALL, built_in
from typecase.server.rpc.errors import TypecaseError, not_found

ROLE_ADMIN = "admin"
ROLE_USER = "user"


@dataclass(frozen=True)
class KeyRestriction:
    """An API key published for one use (auth/scopes.py): the resources ("flow", id) it opens and its actions."""

    resources: frozenset[tuple[str, str]]
    actions: frozenset[str]
    rate_limit: str = ""


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    api_key_id: str | None = None
    # The groups the caller belongs to, loaded per call by the auth guard (auth/membership.py): sharing grants
    # made to a group reach its members through these (infra/sharing.py).
    group_ids: tuple[str, ...] = ()
    # Set for a restricted API key: every domain checks named resources with `check_key_resource`.
    restriction: KeyRestriction | None = None
    # The role's permissions, loaded per call with the groups (auth/membership.py); None: a built-in role's own
    # (a Principal made in code, e.g. a flow run as its owner).
    permissions: frozenset[str] | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    @property
    def granted(self) -> frozenset[str]:
        if self.role == ROLE_ADMIN:
            return ALL
        if self.permissions is not None:
            return self.permissions
        return built_in(self.role) or frozenset()

    def can(self, permission: str) -> bool:
        return permission in self.granted


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def bind(principal: Principal | None) -> contextvars.Token:
    return _principal.set(principal)


def current() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise TypecaseError(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "authentication required")
    return principal


def require_admin() -> Principal:
    principal = current()
    if not principal.is_admin:
        raise TypecaseError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", "this action needs an admin")
    return principal


def require_permission(permission: str) -> Principal:
    """PERMISSION_DENIED unless the caller's role holds `permission` (the admin role holds them all)."""
    principal = current()
    if not principal.can(permission):
        raise TypecaseError(
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
            f"this action needs the {permission!r} permission, which your role ({principal.role}) lacks",
            {"permission": permission},
        )
    return principal


def can_see(owner_id: str | None) -> bool:
    principal = current()
    return principal.is_admin or owner_id == principal.user_id


def check_visible(kind: str, resource_id: str, owner_id: str | None) -> None:
    """Raise NOT_FOUND unless the caller owns the resource or is an admin."""
    if not can_see(owner_id):
        raise not_found(kind, resource_id)


def check_key_resource(resource_type: str, resource_id: str) -> None:
    """PERMISSION_DENIED when the caller's API key is restricted to resources that do not include this one."""
    restriction = current().restriction
    if restriction is not None and (resource_type, resource_id) not in restriction.resources:
        raise TypecaseError(
            grpc.StatusCode.PERMISSION_DENIED,
            "API_KEY_RESTRICTED",
            f"this API key does not open {resource_type} {resource_id!r}",
            {"resource": f"{resource_type}/{resource_id}"},
        )


def owner_scope() -> str | None:
    """The owner id list queries must filter on, or None for an admin (who sees all)."""
    principal = current()
    return None if principal.is_admin else principal.user_id


def bind_reset(token: contextvars.Token) -> None:
    _principal.reset(token)
