"""RoleService: the fixed permissions, the built-in roles and custom roles (auth/permissions.py), and the checks
a role assignment passes (AuthService.CreateUser/UpdateUser, single sign-on).

A custom role's name is its key and is immutable: users.role holds it, so a rename would have to rewrite every
user. A change to a role's permissions clears the cached access of every user holding it (auth/membership.py), so
it applies on their next call on every replica. No one can hand out what they lack: assigning a role, or creating
or widening one, needs every permission it grants (so roles.manage alone cannot mint an admin).
"""

from __future__ import annotations

import grpc
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from typecase.server.auth import permissions
from typecase.server.auth.membership import Memberships
from typecase.server.auth.models import RoleRow, UserRow
from typecase.server.infra.audit import AuditLog
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import to_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.server.rpc.fields import mask_paths
from typecase.server.rpc.principal import Principal
from typecase.v1 import roles_pb2 as pb
from typecase.v1 import roles_pb2_grpc

MAX_DESCRIPTION_CHARS = 1000
ROLE_FIELDS = {"description", "permissions"}


def role_not_found(name: str, code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND) -> TypecaseError:
    return TypecaseError(code, "ROLE_NOT_FOUND", f"no role is named {name!r}", {"role": name})


def _built_in_error(name: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "ROLE_BUILT_IN",
        f"{name!r} is a built-in role: it cannot be changed or deleted (create a custom role instead)",
        {"role": name},
    )


def check_permissions(values, field: str) -> list[str]:
    unknown = permissions.unknown(values)
    if unknown:
        raise invalid_argument(field, f"unknown permission {', '.join(repr(p) for p in unknown)} (see ListPermissions)")
    return [p for p in permissions.PERMISSIONS if p in set(values)]  # the documented order, no duplicates


def check_grantable(me: Principal, granted, what: str) -> None:
    """PERMISSION_DENIED when `granted` holds a permission the caller lacks: no one hands out more than they have."""
    missing = sorted(set(granted) - me.granted)
    if missing:
        raise TypecaseError(
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
            f"{what} grants {', '.join(missing)}, which your role ({me.role}) lacks",
            {"permission": missing[0]},
        )


async def role_permissions(session, name: str) -> frozenset[str] | None:
    """The permissions of the role named `name`, or None when no role has that name."""
    granted = permissions.built_in(name)
    if granted is not None:
        return granted
    row = await session.get(RoleRow, name) if name else None
    return frozenset(row.permissions or ()) if row is not None else None


async def assignable_role(session, name: str, field: str) -> str:
    """`name` when it names a role the caller may assign; INVALID_ARGUMENT (ROLE_NOT_FOUND) naming `field` or
    PERMISSION_DENIED otherwise."""
    granted = await role_permissions(session, name)
    if granted is None:
        raise TypecaseError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "ROLE_NOT_FOUND",
            f"{field}: no role is named {name!r}",
            {"field": field, "role": name},
        )
    me = caller.current()
    if name == permissions.ROLE_ADMIN and not me.is_admin:
        raise TypecaseError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", "only an admin may make admins")
    check_grantable(me, granted, f"role {name!r}")
    return name


def role_message(name: str, description: str, granted, user_count: int, row: RoleRow | None = None) -> pb.Role:
    return pb.Role(
        name=name,
        description=description,
        permissions=[p for p in permissions.PERMISSIONS if p in set(granted)],
        built_in=row is None,
        user_count=user_count,
        create_time=to_timestamp(row.create_time) if row else None,
        update_time=to_timestamp(row.update_time) if row else None,
    )


class RoleService(roles_pb2_grpc.RoleServiceServicer):
    def __init__(self, db: Database, audit: AuditLog, memberships: Memberships, settings):
        self.db = db
        self.audit = audit
        self.memberships = memberships
        self.settings = settings

    async def _record(self, action: str, name: str, before, after) -> None:
        await self.audit.record(
            action,
            actor_id=caller.current().user_id,
            resource_type="role",
            resource_id=name,
            detail={"before": before, "after": after},
        )

    @staticmethod
    async def _user_counts(session, names: list[str]) -> dict[str, int]:
        rows = await session.execute(
            select(UserRow.role, func.count()).where(UserRow.role.in_(names)).group_by(UserRow.role)
        )
        return {role: int(count) for role, count in rows.all()}

    async def _holders(self, session, name: str) -> list[str]:
        return list((await session.scalars(select(UserRow.id).where(UserRow.role == name))).all())

    async def ListPermissions(self, request, context):
        caller.current()
        return pb.ListPermissionsResponse(
            permissions=[pb.Permission(name=n, description=d) for n, d in permissions.PERMISSIONS.items()]
        )

    async def ListRoles(self, request, context):
        caller.current()
        async with self.db.session() as session:
            rows = list((await session.scalars(select(RoleRow).order_by(RoleRow.name))).all())
            counts = await self._user_counts(session, [*permissions.BUILT_IN_ROLES, *(r.name for r in rows)])
        roles = [
            role_message(name, description, granted, counts.get(name, 0))
            for name, (description, granted) in permissions.BUILT_IN_ROLES.items()
        ]
        roles += [role_message(r.name, r.description, r.permissions or (), counts.get(r.name, 0), r) for r in rows]
        return pb.ListRolesResponse(roles=roles)

    async def GetRole(self, request, context):
        caller.current()
        name = request.name
        async with self.db.session() as session:
            counts = await self._user_counts(session, [name])
            if name in permissions.BUILT_IN_ROLES:
                description, granted = permissions.BUILT_IN_ROLES[name]
                return pb.GetRoleResponse(role=role_message(name, description, granted, counts.get(name, 0)))
            row = await session.get(RoleRow, name) if name else None
        if row is None:
            raise role_not_found(name)
        return pb.GetRoleResponse(
            role=role_message(name, row.description, row.permissions or (), counts.get(name, 0), row)
        )

    def _check_fields(self, role: pb.Role, paths: set[str]) -> dict:
        values: dict = {}
        if "description" in paths:
            if len(role.description) > MAX_DESCRIPTION_CHARS:
                raise invalid_argument("role.description", f"at most {MAX_DESCRIPTION_CHARS} characters")
            values["description"] = role.description
        if "permissions" in paths:
            values["permissions"] = check_permissions(role.permissions, "role.permissions")
            check_grantable(caller.current(), values["permissions"], "this role")
        return values

    async def CreateRole(self, request, context):
        caller.require_permission("roles.manage")
        role = request.role
        name = role.name.strip()
        if not permissions.ROLE_NAME.fullmatch(name):
            raise invalid_argument(
                "role.name", "2-64 characters of lower-case letters, digits, '_', '.', '-', starting with a letter"
            )
        if name in permissions.BUILT_IN_ROLES:
            raise _built_in_error(name)
        values = {"description": "", "permissions": []} | self._check_fields(role, ROLE_FIELDS)
        row = RoleRow(name=name, **values)
        async with self.db.session() as session:
            if (await session.scalar(select(func.count()).select_from(RoleRow))) >= self.settings.max_roles:
                raise TypecaseError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "SHARING_LIMIT_EXCEEDED",
                    f"at most {self.settings.max_roles} custom roles may exist (max_roles)",
                    {"limit": "max_roles"},
                )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                raise TypecaseError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "ALREADY_EXISTS",
                    f"a role named {name!r} already exists",
                    {"field": "role.name"},
                ) from None
        await self._record("role.create", name, None, values)
        return pb.CreateRoleResponse(role=role_message(name, row.description, row.permissions or (), 0, row))

    async def UpdateRole(self, request, context):
        caller.require_permission("roles.manage")
        role = request.role
        paths = mask_paths(request.update_mask, role, ROLE_FIELDS, "role")
        if role.name in permissions.BUILT_IN_ROLES:
            raise _built_in_error(role.name)
        values = self._check_fields(role, paths)
        async with self.db.session() as session:
            row = await session.get(RoleRow, role.name) if role.name else None
            if row is None:
                raise role_not_found(role.name)
            # Narrowing a role one cannot grant in full is handing it out too: the old set must be grantable.
            check_grantable(caller.current(), row.permissions or (), f"role {role.name!r}")
            before = {k: getattr(row, k) for k in values}
            for key, value in values.items():
                setattr(row, key, value)
            row.update_time = utcnow()
            await session.commit()
            holders = await self._holders(session, row.name)
            counts = {row.name: len(holders)}
        if "permissions" in values:
            await self.memberships.forget(*holders)
        await self._record("role.update", row.name, before, values)
        return pb.UpdateRoleResponse(
            role=role_message(row.name, row.description, row.permissions or (), counts[row.name], row)
        )

    async def DeleteRole(self, request, context):
        me = caller.require_permission("roles.manage")
        name = request.name
        if name in permissions.BUILT_IN_ROLES:
            raise _built_in_error(name)
        async with self.db.session() as session:
            row = await session.get(RoleRow, name) if name else None
            if row is None:
                raise role_not_found(name)
            check_grantable(me, row.permissions or (), f"role {name!r}")
            holders = await self._holders(session, name)
            if holders:
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "ROLE_IN_USE",
                    f"{len(holders)} user(s) hold role {name!r}: give them another role first",
                    {"role": name, "user_count": str(len(holders))},
                )
            before = {"description": row.description, "permissions": row.permissions or []}
            await session.delete(row)
            await session.commit()
        await self._record("role.delete", name, before, None)
        return pb.DeleteRoleResponse()
