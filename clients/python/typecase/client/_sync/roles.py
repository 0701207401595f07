# GENERATED from _async/roles.py by scripts/gen_sync.py: do not edit; edit that file, run `make sdk-gen`.
"""`client.roles`: roles and their permission sets (RoleService), and assigning a role to a user."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import TYPE_CHECKING

from google.protobuf import field_mask_pb2

from typecase.client._sync.resource import Resource
from typecase.v1 import auth_pb2, auth_pb2_grpc, roles_pb2, roles_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._sync.client import Client


class Roles(Resource):
    """Built-in roles (admin, group_admin, builder, user) and custom ones made from the server's fixed list of
    permissions (`list_permissions`). Managing roles needs the roles.manage permission; assigning one needs
    users.manage and every permission of the role assigned."""

    def __init__(self, client: Client, stub: roles_pb2_grpc.RoleServiceStub,
                 users: auth_pb2_grpc.AuthServiceStub) -> None:
        super().__init__(client)
        self.stub = stub
        self.users = users

    def list_permissions(self, *, timeout: float | None = None) -> builtins.list[roles_pb2.Permission]:
        request = roles_pb2.ListPermissionsRequest()
        response = self._unary(self.stub.ListPermissions, request, roles_pb2.ListPermissionsResponse, timeout)
        return list(response.permissions)

    def list(self, *, timeout: float | None = None) -> builtins.list[roles_pb2.Role]:
        request = roles_pb2.ListRolesRequest()
        return list((self._unary(self.stub.ListRoles, request, roles_pb2.ListRolesResponse, timeout)).roles)

    def get(self, name: str, *, timeout: float | None = None) -> roles_pb2.Role:
        request = roles_pb2.GetRoleRequest(name=name)
        return (self._unary(self.stub.GetRole, request, roles_pb2.GetRoleResponse, timeout)).role

    def create(self, name: str, permissions: Iterable[str], *, description: str = "",
               timeout: float | None = None) -> roles_pb2.Role:
        role = roles_pb2.Role(name=name, description=description, permissions=list(permissions))
        request = roles_pb2.CreateRoleRequest(role=role)
        return (self._unary(self.stub.CreateRole, request, roles_pb2.CreateRoleResponse, timeout)).role

    def update(self, name: str, *, permissions: Iterable[str] | None = None, description: str | None = None,
               timeout: float | None = None) -> roles_pb2.Role:
        """Change what is given (None leaves a field as it is); an empty permission list empties the role."""
        role, paths = roles_pb2.Role(name=name), []
        if permissions is not None:
            role.permissions.extend(permissions)
            paths.append("permissions")
        if description is not None:
            role.description = description
            paths.append("description")
        if not paths:
            raise ValueError("give permissions or description to update")
        request = roles_pb2.UpdateRoleRequest(role=role, update_mask=field_mask_pb2.FieldMask(paths=paths))
        return (self._unary(self.stub.UpdateRole, request, roles_pb2.UpdateRoleResponse, timeout)).role

    def delete(self, name: str, *, timeout: float | None = None) -> None:
        request = roles_pb2.DeleteRoleRequest(name=name)
        self._unary(self.stub.DeleteRole, request, roles_pb2.DeleteRoleResponse, timeout)

    def assign(self, user_id: str, role: str, *, timeout: float | None = None) -> auth_pb2.User:
        """Give a user a role, built-in or custom, by name (AuthService.UpdateUser with role_name)."""
        request = auth_pb2.UpdateUserRequest(user=auth_pb2.User(id=user_id, role_name=role),
                                             update_mask=field_mask_pb2.FieldMask(paths=["role_name"]))
        return (self._unary(self.users.UpdateUser, request, auth_pb2.UpdateUserResponse, timeout)).user
