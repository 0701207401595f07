"""What a single sign-on brings along besides the identity: the role mapped from the groups claim
(oidc_admin_groups, oidc_role_map) and, with oidc_sync_groups, the user's Typecase group memberships.

Groups are matched by name in any letter case (GroupRow.name_lower). The sync is whole: the user joins every
claimed group that exists (or is created, with oidc_create_groups) and leaves every other group, so the identity
provider stays the one place where membership is managed; group-admin flags of kept memberships stay. The caller
clears the user's cached access after the commit (auth/membership.py), so the result holds on the next call.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from typecase.server.auth import permissions
from typecase.server.auth.models import GroupMemberRow, GroupRow
from typecase.server.auth.roles import role_permissions

log = logging.getLogger("typecase.auth")
MAX_GROUP_NAME = 128


def role_pairs(settings) -> list[tuple[str, str]]:
    """(group, role) in the order they apply: admin groups first, then oidc_role_map."""
    pairs = [(g, permissions.ROLE_ADMIN) for g in settings.oidc_admin_groups]
    for pair in settings.oidc_role_map:
        group, _, role = pair.partition("=")
        pairs.append((group.strip(), role.strip()))
    return pairs


async def mapped_role(session, settings, groups: list[str], current: str | None) -> str | None:
    """The role the claim gives, or None to keep `current` (no mapping configured and not a new user)."""
    pairs = role_pairs(settings)
    if not pairs:
        return None if current is not None else settings.default_user_role
    claimed = set(groups)
    for group, role in pairs:
        if group in claimed:
            if await role_permissions(session, role) is not None:
                return role
            log.warning("oidc_role_map names role %r, which does not exist: ignored", role)
    return settings.default_user_role


async def sync_groups(session, settings, user_id: str, groups: list[str]) -> dict[str, list[str]]:
    """Make `user_id`'s memberships those of the claimed `groups`; returns the group names joined and left."""
    wanted = {g.strip().lower(): g.strip() for g in groups if g.strip() and len(g.strip()) <= MAX_GROUP_NAME}
    found = {
        row.name_lower: row
        for row in (await session.scalars(select(GroupRow).where(GroupRow.name_lower.in_(list(wanted))))).all()
    }
    if settings.oidc_create_groups:
        for lower, name in wanted.items():
            if lower not in found:
                row = GroupRow(name=name, description="created by single sign-on")
                session.add(row)
                found[lower] = row
        await session.flush()
    target = {row.id: row.name for row in list(found.values())[: settings.max_groups_per_user]}
    current = {
        m.group_id: m for m in (await session.scalars(select(GroupMemberRow).where(GroupMemberRow.user_id == user_id)))
    }
    leave = [g for g in current if g not in target]
    join = [g for g in target if g not in current]
    if leave:
        names = dict((await session.execute(select(GroupRow.id, GroupRow.name).where(GroupRow.id.in_(leave)))).all())
        await session.execute(
            delete(GroupMemberRow).where(GroupMemberRow.user_id == user_id, GroupMemberRow.group_id.in_(leave))
        )
    else:
        names = {}
    for group_id in join:
        session.add(GroupMemberRow(group_id=group_id, user_id=user_id, group_admin=False))
    return {"joined": sorted(target[g] for g in join), "left": sorted(names.get(g, g) for g in leave)}
