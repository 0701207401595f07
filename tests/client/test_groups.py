"""Groups and sharing through the SDK: an admin makes a group, adds a member, an owner shares a base with it and
the member finds it; unsharing closes it again."""

from __future__ import annotations

import pytest

from typecase.client import Client


def test_share_a_base_with_a_group_through_the_sdk(client, hosted):
    member = client.auth.create_user("sdk-member", "correct horse battery")
    group = client.groups.create("sdk readers", description="read the handbook")
    client.groups.add_member(group.id, member.id)
    assert [m.user_id for m in client.groups.list_members(group.id)] == [member.id]
    kb = client.knowledge.create_knowledge_base("sdk shared base")

    grant = client.groups.share("knowledge_base", kb.id, group_id=group.id, level="use")
    assert [g.id for g in client.groups.list_grants(resource_type="knowledge_base", resource_id=kb.id)] == [grant.id]
    with pytest.raises(ValueError):
        client.groups.share("knowledge_base", kb.id, user_id=member.id, group_id=group.id)

    with Client(hosted.target) as as_member:
        as_member.auth.login("sdk-member", "correct horse battery")
        assert kb.id in [b.id for b in as_member.knowledge.list_knowledge_bases()]
        assert [g.name for g in as_member.groups.list()] == ["sdk readers"]
        client.groups.unshare(grant.id)
        assert kb.id not in [b.id for b in as_member.knowledge.list_knowledge_bases()]
