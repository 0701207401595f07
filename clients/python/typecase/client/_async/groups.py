"""`client.groups`: groups, their members, and sharing grants (GroupService)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from typecase.client._async.resource import AsyncResource
from typecase.v1 import groups_pb2, groups_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient

GRANTEE_TYPES = {"user": groups_pb2.GRANTEE_TYPE_USER, "group": groups_pb2.GRANTEE_TYPE_GROUP}
LEVELS = {"use": groups_pb2.SHARE_LEVEL_USE, "edit": groups_pb2.SHARE_LEVEL_EDIT}


class AsyncGroups(AsyncResource):
    """Groups (admins create them; group admins manage members) and grants that share a resource at "use" or
    "edit" level with a user or a group."""

    def __init__(self, client: AsyncClient, stub: groups_pb2_grpc.GroupServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    async def create(self, name: str, *, description: str = "", timeout: float | None = None) -> groups_pb2.Group:
        request = groups_pb2.CreateGroupRequest(group=groups_pb2.Group(name=name, description=description))
        return (await self._unary(self.stub.CreateGroup, request, groups_pb2.CreateGroupResponse, timeout)).group

    async def get(self, group_id: str, *, timeout: float | None = None) -> groups_pb2.Group:
        request = groups_pb2.GetGroupRequest(group_id=group_id)
        return (await self._unary(self.stub.GetGroup, request, groups_pb2.GetGroupResponse, timeout)).group

    def list(self, *, member_id: str = "", page_size: int = 100,
             timeout: float | None = None) -> AsyncIterator[groups_pb2.Group]:
        request = groups_pb2.ListGroupsRequest(member_id=member_id, page_size=page_size)
        return self._pages(self.stub.ListGroups, request, "groups", timeout)

    async def delete(self, group_id: str, *, timeout: float | None = None) -> None:
        request = groups_pb2.DeleteGroupRequest(group_id=group_id)
        await self._unary(self.stub.DeleteGroup, request, groups_pb2.DeleteGroupResponse, timeout)

    async def add_member(self, group_id: str, user_id: str, *, group_admin: bool = False,
                         timeout: float | None = None) -> groups_pb2.GroupMember:
        request = groups_pb2.AddGroupMemberRequest(
            group_id=group_id, member=groups_pb2.GroupMember(user_id=user_id, group_admin=group_admin))
        return (await self._unary(self.stub.AddGroupMember, request, groups_pb2.AddGroupMemberResponse,
                                  timeout)).member

    def list_members(self, group_id: str, *, page_size: int = 100,
                     timeout: float | None = None) -> AsyncIterator[groups_pb2.GroupMember]:
        request = groups_pb2.ListGroupMembersRequest(group_id=group_id, page_size=page_size)
        return self._pages(self.stub.ListGroupMembers, request, "members", timeout)

    async def remove_member(self, group_id: str, user_id: str, *, timeout: float | None = None) -> None:
        request = groups_pb2.RemoveGroupMemberRequest(group_id=group_id, user_id=user_id)
        await self._unary(self.stub.RemoveGroupMember, request, groups_pb2.RemoveGroupMemberResponse, timeout)

    async def share(self, resource_type: str, resource_id: str, *, user_id: str = "", group_id: str = "",
                    level: str = "use", timeout: float | None = None) -> groups_pb2.Grant:
        """Share a resource ("knowledge_base", "flow", "tool_provider", "assistant") with a user or a group."""
        if bool(user_id) == bool(group_id):
            raise ValueError("give exactly one of user_id and group_id")
        grant = groups_pb2.Grant(resource_type=resource_type, resource_id=resource_id,
                                 grantee_type=GRANTEE_TYPES["user" if user_id else "group"],
                                 grantee_id=user_id or group_id, level=LEVELS[level])
        request = groups_pb2.CreateGrantRequest(grant=grant)
        return (await self._unary(self.stub.CreateGrant, request, groups_pb2.CreateGrantResponse, timeout)).grant

    def list_grants(self, *, resource_type: str = "", resource_id: str = "", page_size: int = 100,
                    timeout: float | None = None) -> AsyncIterator[groups_pb2.Grant]:
        request = groups_pb2.ListGrantsRequest(resource_type=resource_type, resource_id=resource_id,
                                               page_size=page_size)
        return self._pages(self.stub.ListGrants, request, "grants", timeout)

    async def unshare(self, grant_id: str, *, timeout: float | None = None) -> None:
        request = groups_pb2.DeleteGrantRequest(grant_id=grant_id)
        await self._unary(self.stub.DeleteGrant, request, groups_pb2.DeleteGrantResponse, timeout)
