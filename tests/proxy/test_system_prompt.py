"""System prompt rules: exactly the configured rewrite, on exactly the two routes, through the real proxy and SDKs."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.proxy.conftest import update
from typecase.server.proxy.system_prompt import SystemPromptRule

CLAUDE_CODE_SYSTEM = [
    {
        "type": "text",
        "text": "You are Claude Code, Anthropic's official CLI for Claude.",
        "cache_control": {"type": "ephemeral"},
    },
    {"type": "text", "text": "Project instructions: be terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
]


def rewrite(rule: SystemPromptRule, path: str, body: dict) -> dict | None:
    out = rule.rewrite(path, json.dumps(body).encode())
    return None if out is None else json.loads(out)


@pytest.mark.parametrize(
    "system, expected",
    [
        ("old prompt", "NEW"),
        (
            [{"type": "text", "text": "first", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "b"}],
            [{"type": "text", "text": "NEW", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "b"}],
        ),
        (
            [{"type": "image", "source": {}}, {"type": "text", "text": "t", "citations": None}],
            [{"type": "image", "source": {}}, {"type": "text", "text": "NEW", "citations": None}],
        ),
    ],
)
def test_replace_changes_only_the_first_system_text(system, expected):
    body = {"model": "m", "system": system, "messages": [{"role": "user", "content": "first"}]}
    out = rewrite(SystemPromptRule(True, "replace", "NEW"), "/v1/messages", body)
    assert out == {**body, "system": expected}


def test_replace_without_a_system_prompt_and_disabled_rules_change_nothing():
    body = {"model": "m", "messages": []}
    assert rewrite(SystemPromptRule(True, "replace", "NEW"), "/v1/messages", body) is None
    assert rewrite(SystemPromptRule(False, "replace", "NEW"), "/v1/messages", {**body, "system": "x"}) is None
    assert rewrite(SystemPromptRule(True, "replace", ""), "/v1/messages", {**body, "system": "x"}) is None
    assert rewrite(SystemPromptRule(True, "replace", "NEW"), "/v1/messages/count_tokens", {"system": "x"}) is None
    assert SystemPromptRule(True, "replace", "NEW").rewrite("/v1/messages", b"not json") is None
    assert SystemPromptRule(True, "replace", "NEW").rewrite("/v1/messages", b"[1, 2]") is None


def test_insert_when_marker_absent_is_idempotent():
    rule = SystemPromptRule(True, "insert", "Team policy: cite sources.", marker="Team policy")
    out = rewrite(rule, "/v1/messages", {"system": CLAUDE_CODE_SYSTEM, "model": "m"})
    assert out["system"] == [{"type": "text", "text": "Team policy: cite sources."}, *CLAUDE_CODE_SYSTEM]
    assert rewrite(rule, "/v1/messages", out) is None  # the marker is there now
    out = rewrite(rule, "/v1/messages", {"system": "plain string"})
    assert out["system"] == [
        {"type": "text", "text": "Team policy: cite sources."},
        {"type": "text", "text": "plain string"},
    ]
    assert rewrite(rule, "/v1/messages", {"messages": []})["system"] == [
        {"type": "text", "text": "Team policy: cite sources."}
    ]


def test_openai_system_and_developer_messages():
    body = {
        "model": "gpt",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {"role": "user", "content": "q"},
        ],
    }
    out = rewrite(SystemPromptRule(True, "replace", "NEW"), "/v1/chat/completions", body)
    assert out["messages"][0] == {"role": "developer", "content": [{"type": "text", "text": "NEW"}]}
    assert out["messages"][1] == {"role": "user", "content": "q"}
    out = rewrite(SystemPromptRule(True, "insert", "POLICY"), "/v1/chat/completions", body)
    assert out["messages"][0] == {"role": "system", "content": "POLICY"}
    assert out["messages"][1:] == body["messages"]
    assert rewrite(SystemPromptRule(True, "insert", "POLICY", marker="dev"), "/v1/chat/completions", body) is None


async def test_anthropic_rule_through_the_proxy(proxy_url, upstream, admin):
    await update(admin, proxy_system_prompt_enabled=True, proxy_system_prompt_text="You are the search team's bot.")
    async with anthropic.AsyncAnthropic(base_url=proxy_url, api_key="k", max_retries=0) as claude:
        async with claude.messages.stream(
            model="claude-test", max_tokens=8, system=CLAUDE_CODE_SYSTEM, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            assert await stream.get_final_text() == "tok0 tok1 tok2 "
        got = upstream.last("/v1/messages").json()
        assert got["system"] == [
            {**CLAUDE_CODE_SYSTEM[0], "text": "You are the search team's bot."},
            CLAUDE_CODE_SYSTEM[1],
        ]
        assert got["messages"] == [{"role": "user", "content": "hi"}] and got["stream"] is True

        # insert mode with a marker: inserted once, and a body already carrying the marker is not touched
        await update(admin, proxy_system_prompt_mode="insert", proxy_system_prompt_marker="search team")
        await claude.messages.create(model="claude-test", max_tokens=8, system="Be brief.", messages=[])
        assert upstream.last("/v1/messages").json()["system"] == [
            {"type": "text", "text": "You are the search team's bot."},
            {"type": "text", "text": "Be brief."},
        ]
    raw = b'{"model":"m",  "system": "ask the search team first",\n"messages":[]}'
    async with httpx.AsyncClient() as client:
        await client.post(proxy_url + "/v1/messages", content=raw)
        assert upstream.last("/v1/messages").body == raw  # byte for byte
        await client.post(proxy_url + "/v1/messages/count_tokens", content=b'{"system":"other route"}')
        assert upstream.last().body == b'{"system":"other route"}'


async def test_openai_rule_through_the_proxy(proxy_url, upstream, admin):
    await update(admin, proxy_system_prompt_enabled=True, proxy_system_prompt_text="Answer in French.")
    async with openai.AsyncOpenAI(base_url=proxy_url + "/v1", api_key="k", max_retries=0) as gpt:
        stream = await gpt.chat.completions.create(
            model="gpt-test",
            stream=True,
            messages=[{"role": "system", "content": "Answer in English."}, {"role": "user", "content": "hello"}],
        )
        assert [c.choices[0].delta.content async for c in stream if c.choices][1:4] == ["tok0 ", "tok1 ", "tok2 "]
    got = upstream.last("/v1/chat/completions").json()
    assert got["messages"] == [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hello"}]
