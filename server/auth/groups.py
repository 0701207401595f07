"""GroupService: groups, their members and group admins, and sharing grants (infra/sharing.py's table).

Who may do what: admins everything; a group admin renames their group and manages its members; members see their
group and its member list; anyone else gets NOT_FOUND for the group. A grant is made, changed and withdrawn by the
resource's owner or an admin; the owner is found through `ResourceOwners`, which app.py builds over the domains
(this module never reads another domain's tables). Every change is audited with actor, target and before/after,
and every membership change clears the member's cached groups (auth/membership.py) so it holds on the next call.
"""

from __future__ import annotations

from typing import Protocol

import grpc
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from typecase.server.auth.membership import Memberships
from typecase.server.auth.models import GroupMemberRow, GroupRow, UserRow
from typecase.server.infra import sharing
from typecase.server.infra.audit import AuditLog
from typecase.server.infra.sql import Database, utcnow
from typecase.server.rpc import paging
from typecase.server.rpc import principal as caller
from typecase.server.rpc.convert import to_timestamp
from typecase.server.rpc.errors import TypecaseError, invalid_argument, not_found
from typecase.v1 import groups_pb2 as pb
from typecase.v1 import groups_pb2_grpc

MAX_NAME_CHARS = 128
MAX_DESCRIPTION_CHARS = 1000
GROUP_FIELDS = {"name", "description"}
GRANTEE_TO_PROTO = {sharing.GRANTEE_USER: pb.GRANTEE_TYPE_USER, sharing.GRANTEE_GROUP: pb.GRANTEE_TYPE_GROUP}
PROTO_TO_GRANTEE = {v: k for k, v in GRANTEE_TO_PROTO.items()}
LEVEL_TO_PROTO = {sharing.USE: pb.SHARE_LEVEL_USE, sharing.EDIT: pb.SHARE_LEVEL_EDIT}
PROTO_TO_LEVEL = {v: k for k, v in LEVEL_TO_PROTO.items()} | {pb.SHARE_LEVEL_UNSPECIFIED: sharing.USE}


class ResourceOwners(Protocol):
    async def owner_of(self, resource_type: str, resource_id: str) -> tuple[bool, str | None]:
        """(exists, owner id) of one resource; owner None for a resource nobody owns (the built-in tools)."""


def group_message(row: GroupRow, members: int) -> pb.Group:
    return pb.Group(
        id=row.id,
        name=row.name,
        description=row.description,
        member_count=members,
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
    )


def member_message(row: GroupMemberRow, username: str) -> pb.GroupMember:
    return pb.GroupMember(
        group_id=row.group_id,
        user_id=row.user_id,
        group_admin=row.group_admin,
        username=username,
        create_time=to_timestamp(row.create_time),
    )


def grant_message(row: sharing.GrantRow) -> pb.Grant:
    return pb.Grant(
        id=row.id,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        grantee_type=GRANTEE_TO_PROTO[row.grantee_type],
        grantee_id=row.grantee_id,
        level=LEVEL_TO_PROTO[row.level],
        creator_id=row.creator_id or "",
        create_time=to_timestamp(row.create_time),
        update_time=to_timestamp(row.update_time),
    )


def grant_detail(row: sharing.GrantRow) -> dict:
    return {"grantee_type": row.grantee_type, "grantee_id": row.grantee_id, "level": row.level}


def use_only(resource_type: str, level: str) -> None:
    """A model is granted at level use only: admins manage models, so there is nothing to edit."""
    if level != sharing.USE and resource_type in sharing.USE_ONLY:
        raise invalid_argument("grant.level", f"a {resource_type} is shared at SHARE_LEVEL_USE only")


def forbidden(message: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", message)


class GroupService(groups_pb2_grpc.GroupServiceServicer):
    def __init__(self, db: Database, audit: AuditLog, memberships: Memberships, owners: ResourceOwners, settings):
        self.db = db
        self.audit = audit
        self.memberships = memberships
        self.owners = owners
        self.settings = settings

    async def _record(self, action: str, resource_type: str, resource_id: str, **detail) -> None:
        await self.audit.record(
            action,
            actor_id=caller.current().user_id,
            resource_type=resource_type,
            resource_id=resource_id,
            detail=detail,
        )

    # -- groups ----------------------------------------------------------------------------------------------
    async def _group(self, session, group_id: str, manage: bool = False) -> GroupRow:
        """The group if the caller may see it (admin or member) and, with `manage`, manage it (admin or group
        admin). A member who may not manage gets PERMISSION_DENIED; anyone else NOT_FOUND."""
        if not group_id:
            raise invalid_argument("group_id", "required")
        me = caller.current()
        row = await session.get(GroupRow, group_id)
        if row is None:
            raise not_found("group", group_id)
        if me.can("groups.manage"):
            return row
        membership = await session.get(GroupMemberRow, (group_id, me.user_id))
        if membership is None:
            raise not_found("group", group_id)
        if manage and not membership.group_admin:
            raise forbidden("only an admin or a group admin of this group may change it")
        return row

    async def _member_counts(self, session, group_ids: list[str]) -> dict[str, int]:
        if not group_ids:
            return {}
        rows = await session.execute(
            select(GroupMemberRow.group_id, func.count())
            .where(GroupMemberRow.group_id.in_(group_ids))
            .group_by(GroupMemberRow.group_id)
        )
        return {group_id: int(count) for group_id, count in rows.all()}

    def _check_group_fields(self, group: pb.Group, paths: set[str]) -> dict[str, str]:
        values = {}
        if "name" in paths:
            name = group.name.strip()
            if not name or len(name) > MAX_NAME_CHARS:
                raise invalid_argument("group.name", f"required, at most {MAX_NAME_CHARS} characters")
            values["name"] = name
        if "description" in paths:
            if len(group.description) > MAX_DESCRIPTION_CHARS:
                raise invalid_argument("group.description", f"at most {MAX_DESCRIPTION_CHARS} characters")
            values["description"] = group.description
        return values

    @staticmethod
    def _name_taken(name: str) -> TypecaseError:
        return TypecaseError(
            grpc.StatusCode.ALREADY_EXISTS,
            "ALREADY_EXISTS",
            f"a group named {name!r} (in any letter case) already exists",
            {"field": "group.name"},
        )

    async def CreateGroup(self, request, context):
        caller.require_permission("groups.manage")
        values = self._check_group_fields(request.group, {"name", "description"})
        row = GroupRow(**values)
        try:
            async with self.db.session() as session:
                session.add(row)
                await session.commit()
        except IntegrityError:
            raise self._name_taken(values["name"]) from None
        await self._record("group.create", "group", row.id, after=values)
        return pb.CreateGroupResponse(group=group_message(row, 0))

    async def ListGroups(self, request, context):
        me = caller.current()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token) or {}
        stmt = select(GroupRow)
        member = request.member_id if me.can("groups.manage") else me.user_id
        if member:
            stmt = stmt.where(GroupRow.id.in_(select(GroupMemberRow.group_id).where(GroupMemberRow.user_id == member)))
        if position:
            stmt = stmt.where(GroupRow.name_lower > str(position.get("after", "")))
        async with self.db.session() as session:
            rows = list((await session.scalars(stmt.order_by(GroupRow.name_lower).limit(limit + 1))).all())
            more = len(rows) > limit
            rows = rows[:limit]
            counts = await self._member_counts(session, [r.id for r in rows])
        return pb.ListGroupsResponse(
            groups=[group_message(r, counts.get(r.id, 0)) for r in rows],
            next_page_token=paging.encode_token(after=rows[-1].name_lower) if more else "",
        )

    async def GetGroup(self, request, context):
        async with self.db.session() as session:
            row = await self._group(session, request.group_id)
            counts = await self._member_counts(session, [row.id])
        return pb.GetGroupResponse(group=group_message(row, counts.get(row.id, 0)))

    async def UpdateGroup(self, request, context):
        group = request.group
        paths = set(request.update_mask.paths) or {f.name for f, _ in group.ListFields()} - {"id"}
        unknown = paths - GROUP_FIELDS
        if unknown:
            raise invalid_argument("update_mask", f"cannot update {', '.join(sorted(unknown))} of a group")
        values = self._check_group_fields(group, paths)
        try:
            async with self.db.session() as session:
                row = await self._group(session, group.id, manage=True)
                before = {k: getattr(row, k) for k in values}
                for key, value in values.items():
                    setattr(row, key, value)
                row.update_time = utcnow()
                await session.commit()
                counts = await self._member_counts(session, [row.id])
        except IntegrityError:
            raise self._name_taken(values.get("name", "")) from None
        await self._record("group.update", "group", row.id, before=before, after=values)
        return pb.UpdateGroupResponse(group=group_message(row, counts.get(row.id, 0)))

    async def DeleteGroup(self, request, context):
        caller.require_permission("groups.manage")
        async with self.db.session() as session:
            row = await self._group(session, request.group_id)
            members = list(
                (await session.scalars(select(GroupMemberRow.user_id).where(GroupMemberRow.group_id == row.id))).all()
            )
            grants = list(
                (
                    await session.scalars(
                        select(sharing.GrantRow).where(
                            sharing.GrantRow.grantee_type == sharing.GRANTEE_GROUP,
                            sharing.GrantRow.grantee_id == row.id,
                        )
                    )
                ).all()
            )
            before = {"name": row.name, "description": row.description, "members": len(members)}
            for grant in grants:
                await session.delete(grant)
            await session.execute(delete(GroupMemberRow).where(GroupMemberRow.group_id == row.id))
            await session.delete(row)
            await session.commit()
        await self.memberships.forget(*members)
        await self._record("group.delete", "group", row.id, before=before | {"grants": len(grants)}, after=None)
        return pb.DeleteGroupResponse()

    # -- members ---------------------------------------------------------------------------------------------
    async def AddGroupMember(self, request, context):
        member = request.member
        if not member.user_id:
            raise invalid_argument("member.user_id", "required")
        async with self.db.session() as session:
            group = await self._group(session, request.group_id, manage=True)
            user = await session.get(UserRow, member.user_id)
            if user is None:
                raise not_found("user", member.user_id)
            row = await session.get(GroupMemberRow, (group.id, user.id))
            before = None if row is None else {"group_admin": row.group_admin}
            if row is None:
                count = await session.scalar(
                    select(func.count()).select_from(GroupMemberRow).where(GroupMemberRow.group_id == group.id)
                )
                if (count or 0) >= self.settings.max_group_members:
                    raise TypecaseError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "SHARING_LIMIT_EXCEEDED",
                        f"a group has at most {self.settings.max_group_members} members (max_group_members)",
                        {"field": "member.user_id", "limit": "max_group_members"},
                    )
                groups = await session.scalar(
                    select(func.count()).select_from(GroupMemberRow).where(GroupMemberRow.user_id == user.id)
                )
                if (groups or 0) >= self.settings.max_groups_per_user:
                    raise TypecaseError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "SHARING_LIMIT_EXCEEDED",
                        f"a user belongs to at most {self.settings.max_groups_per_user} groups (max_groups_per_user)",
                        {"field": "member.user_id", "limit": "max_groups_per_user"},
                    )
                row = GroupMemberRow(group_id=group.id, user_id=user.id)
                session.add(row)
            row.group_admin = member.group_admin
            await session.commit()
        await self.memberships.forget(user.id)
        await self._record(
            "group.member.add" if before is None else "group.member.update",
            "group",
            group.id,
            user_id=user.id,
            before=before,
            after={"group_admin": row.group_admin},
        )
        return pb.AddGroupMemberResponse(member=member_message(row, user.username))

    async def ListGroupMembers(self, request, context):
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token) or {}
        async with self.db.session() as session:
            group = await self._group(session, request.group_id)
            stmt = (
                select(GroupMemberRow, UserRow.username)
                .join(UserRow, UserRow.id == GroupMemberRow.user_id)
                .where(GroupMemberRow.group_id == group.id)
            )
            if position:
                stmt = stmt.where(GroupMemberRow.user_id > str(position.get("after", "")))
            rows = (await session.execute(stmt.order_by(GroupMemberRow.user_id).limit(limit + 1))).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return pb.ListGroupMembersResponse(
            members=[member_message(row, username) for row, username in rows],
            next_page_token=paging.encode_token(after=rows[-1][0].user_id) if more else "",
        )

    async def RemoveGroupMember(self, request, context):
        if not request.user_id:
            raise invalid_argument("user_id", "required")
        async with self.db.session() as session:
            group = await self._group(session, request.group_id, manage=True)
            row = await session.get(GroupMemberRow, (group.id, request.user_id))
            if row is None:
                raise not_found("group member", request.user_id)
            before = {"group_admin": row.group_admin}
            await session.delete(row)
            await session.commit()
        await self.memberships.forget(request.user_id)
        await self._record("group.member.remove", "group", group.id, user_id=request.user_id, before=before, after=None)
        return pb.RemoveGroupMemberResponse()

    # -- grants ----------------------------------------------------------------------------------------------
    async def _check_owner(self, resource_type: str, resource_id: str, field: str) -> None:
        """The caller must own the resource (or be an admin); a resource they cannot see is NOT_FOUND."""
        if resource_type not in sharing.RESOURCE_TYPES:
            raise invalid_argument(
                f"{field}resource_type", f"one of {', '.join(sharing.RESOURCE_TYPES)}, not {resource_type!r}"
            )
        if not resource_id:
            raise invalid_argument(f"{field}resource_id", "required")
        me = caller.current()
        exists, owner = await self.owners.owner_of(resource_type, resource_id)
        if not exists:
            raise not_found(resource_type.replace("_", " "), resource_id)
        if me.is_admin or (owner is not None and owner == me.user_id):
            return
        async with self.db.session() as session:
            level = await sharing.access_level(session, resource_type, resource_id, owner, me)
        # Sharing a resource that was shared with you is its owner's call, not yours.
        sharing.require(level, sharing.OWNER, resource_type.replace("_", " "), resource_type, resource_id)

    async def _grant(self, session, grant_id: str) -> sharing.GrantRow:
        if not grant_id:
            raise invalid_argument("grant_id", "required")
        row = await session.get(sharing.GrantRow, grant_id)
        if row is None:
            raise not_found("grant", grant_id)
        me = caller.current()
        if not me.is_admin:
            exists, owner = await self.owners.owner_of(row.resource_type, row.resource_id)
            if not exists or owner != me.user_id:
                raise not_found("grant", grant_id)
        return row

    async def CreateGrant(self, request, context):
        grant = request.grant
        await self._check_owner(grant.resource_type, grant.resource_id, "grant.")
        grantee_type = PROTO_TO_GRANTEE.get(grant.grantee_type)
        if grantee_type is None:
            raise invalid_argument("grant.grantee_type", "GRANTEE_TYPE_USER or GRANTEE_TYPE_GROUP")
        level = PROTO_TO_LEVEL.get(grant.level)
        if level is None:
            raise invalid_argument("grant.level", "SHARE_LEVEL_USE or SHARE_LEVEL_EDIT")
        use_only(grant.resource_type, level)
        me = caller.current()
        async with self.db.session() as session:
            target = await session.get(UserRow if grantee_type == sharing.GRANTEE_USER else GroupRow, grant.grantee_id)
            if target is None or not grant.grantee_id:
                raise invalid_argument("grant.grantee_id", f"no {grantee_type} with id {grant.grantee_id!r}")
            key = (
                sharing.GrantRow.resource_type == grant.resource_type,
                sharing.GrantRow.resource_id == grant.resource_id,
            )
            row = await session.scalar(
                select(sharing.GrantRow).where(
                    *key,
                    sharing.GrantRow.grantee_type == grantee_type,
                    sharing.GrantRow.grantee_id == grant.grantee_id,
                )
            )
            before = None if row is None else grant_detail(row)
            if row is None:
                count = await session.scalar(select(func.count()).select_from(sharing.GrantRow).where(*key))
                if (count or 0) >= self.settings.max_grants_per_resource:
                    raise TypecaseError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "SHARING_LIMIT_EXCEEDED",
                        f"a resource is shared with at most {self.settings.max_grants_per_resource} users and "
                        "groups (max_grants_per_resource)",
                        {"field": "grant.grantee_id", "limit": "max_grants_per_resource"},
                    )
                row = sharing.GrantRow(
                    resource_type=grant.resource_type,
                    resource_id=grant.resource_id,
                    grantee_type=grantee_type,
                    grantee_id=grant.grantee_id,
                    creator_id=me.user_id,
                )
                session.add(row)
            row.level = level
            row.update_time = utcnow()
            await session.commit()
        await self._record(
            "grant.create" if before is None else "grant.update",
            row.resource_type,
            row.resource_id,
            grant_id=row.id,
            before=before,
            after=grant_detail(row),
        )
        return pb.CreateGrantResponse(grant=grant_message(row))

    async def ListGrants(self, request, context):
        me = caller.current()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token) or {}
        stmt = select(sharing.GrantRow)
        if request.resource_id:
            await self._check_owner(request.resource_type, request.resource_id, "")
            stmt = stmt.where(
                sharing.GrantRow.resource_type == request.resource_type,
                sharing.GrantRow.resource_id == request.resource_id,
            )
        else:
            if request.resource_type:
                stmt = stmt.where(sharing.GrantRow.resource_type == request.resource_type)
            if not me.is_admin:
                stmt = stmt.where(sharing.GrantRow.creator_id == me.user_id)
        if position:
            stmt = stmt.where(sharing.GrantRow.id > str(position.get("after", "")))
        async with self.db.session() as session:
            rows = list((await session.scalars(stmt.order_by(sharing.GrantRow.id).limit(limit + 1))).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return pb.ListGrantsResponse(
            grants=[grant_message(r) for r in rows],
            next_page_token=paging.encode_token(after=rows[-1].id) if more else "",
        )

    async def UpdateGrant(self, request, context):
        paths = set(request.update_mask.paths) or {"level"}
        if paths - {"level"}:
            raise invalid_argument("update_mask", "only the level of a grant can change; make a new grant instead")
        level = PROTO_TO_LEVEL.get(request.grant.level)
        if level is None or request.grant.level == pb.SHARE_LEVEL_UNSPECIFIED:
            raise invalid_argument("grant.level", "SHARE_LEVEL_USE or SHARE_LEVEL_EDIT")
        async with self.db.session() as session:
            row = await self._grant(session, request.grant.id)
            use_only(row.resource_type, level)
            before = grant_detail(row)
            row.level = level
            row.update_time = utcnow()
            await session.commit()
        await self._record(
            "grant.update", row.resource_type, row.resource_id, grant_id=row.id, before=before, after=grant_detail(row)
        )
        return pb.UpdateGrantResponse(grant=grant_message(row))

    async def DeleteGrant(self, request, context):
        async with self.db.session() as session:
            row = await self._grant(session, request.grant_id)
            before = grant_detail(row)
            await session.delete(row)
            await session.commit()
        await self._record(
            "grant.delete", row.resource_type, row.resource_id, grant_id=row.id, before=before, after=None
        )
        return pb.DeleteGrantResponse()
