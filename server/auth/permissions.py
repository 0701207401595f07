"""The fixed list of permissions and the built-in roles (README "Roles and permissions").

Every permission gates real calls (named beside it). A role is a name, a description and a subset of these; the
built-in roles live here, in code, so they cannot drift or be edited; custom roles are rows (auth/roles.py).

Why "user" may create its own knowledge bases: as in Bisheng (every user has a personal knowledge space) and unlike
Dify's read-only "normal" member, a person who chats needs to bring their own documents; what it may not do is build
things others use (flows, assistants, tool providers). "builder" holds today's rights of a regular user, so it is
the default role for new accounts (TYPECASE_DEFAULT_USER_ROLE) and the role the 0006 migration gives to accounts
that were "user" before roles existed.
"""

from __future__ import annotations

import re

PERMISSIONS: dict[str, str] = {
    "users.manage": "create, update, disable and delete users, assign roles, manage invite codes",
    "users.read": "list and look up every user (to add them to groups or share with them)",
    "groups.manage": "create and delete groups and manage any group's members",
    "roles.manage": "create, update and delete custom roles",
    "models.manage": "manage LLM providers, models and default models; see offline models",
    "tools.manage_stdio": "register and change tool providers that run a local command (stdio MCP)",
    "tool_providers.create": "register tool providers (OpenAPI, MCP over HTTP)",
    "knowledge.create": "create knowledge bases",
    "flows.create": "create flows",
    "assistants.create": "create assistants",
    "server.manage": "read server stats, errors and logs; change configuration; restart the server",
    "audit.read": "read the audit log",
}

ALL = frozenset(PERMISSIONS)
BUILDER = frozenset({"knowledge.create", "flows.create", "assistants.create", "tool_providers.create"})

ROLE_ADMIN = "admin"
ROLE_GROUP_ADMIN = "group_admin"
ROLE_BUILDER = "builder"
ROLE_USER = "user"

BUILT_IN_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    ROLE_ADMIN: ("Everything, and sees every user's resources", ALL),
    ROLE_GROUP_ADMIN: (
        "A builder who can look up users to manage the members of the groups it is a group admin of",
        BUILDER | {"users.read"},
    ),
    ROLE_BUILDER: ("Creates knowledge bases, flows, assistants and tool providers", BUILDER),
    ROLE_USER: (
        "Chats, uses what is shared with it, and keeps its own knowledge bases",
        frozenset({"knowledge.create"}),
    ),
}

ROLE_NAME = re.compile(r"[a-z][a-z0-9_.-]{1,63}")


def built_in(role: str) -> frozenset[str] | None:
    """The permissions of a built-in role, or None for any other name."""
    entry = BUILT_IN_ROLES.get(role)
    return entry[1] if entry else None


def unknown(permissions) -> list[str]:
    return sorted(p for p in permissions if p not in PERMISSIONS)
