"""Provider extra headers are upstream credentials (issue 18, finding 1): sealed at rest like API keys, never
returned in clear (names shown, values masked, to admins too), still sent upstream; short secrets are masked
whole. Over gRPC and REST, as an ordinary user and as the admin, against a real fake upstream."""

from __future__ import annotations

import grpc
import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_KEY
from tests.flow.support import ADMIN, new_user
from tests.llm.fake_upstream import FakeUpstream
from tests.security.domain_support import token_of
from typecase.server.llm.models import ProviderRow
from typecase.server.llm.registry import mask_key
from typecase.v1 import common_pb2, llm_pb2, llm_pb2_grpc

GATEWAY_SECRET = "gw-secret-0123456789"
HEADERS = {"X-Gateway-Key": GATEWAY_SECRET, "X-Org": "acme-corp"}
SHORT_KEY = "sk-short-key-1234"  # 17 characters: its last 4 are a quarter of it


@pytest.fixture(scope="module")
def upstream():
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
async def world(app_factory, upstream):
    upstream.reset()
    app = await app_factory(llm_local_enabled=False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        user = await new_user(channel, "provider-reader")
        yield app, llm_pb2_grpc.LLMServiceStub(channel), user


async def generate(stub, model_id: str, metadata) -> None:
    request = llm_pb2.GenerateRequest(
        model_id=model_id, messages=[llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content="hi")]
    )
    async for _ in stub.Generate(request, metadata=metadata):
        pass


async def test_extra_header_values_are_never_returned_and_short_keys_are_masked_whole(world, upstream):
    app, stub, user = world
    created = (
        await stub.CreateProvider(
            llm_pb2.CreateProviderRequest(
                provider=llm_pb2.Provider(
                    name="gateway",
                    type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
                    base_url=upstream.base_url + "/v1",
                    api_key=SHORT_KEY,
                    extra_headers=HEADERS,
                )
            ),
            metadata=ADMIN,
        )
    ).provider
    model = (
        await stub.CreateModel(
            llm_pb2.CreateModelRequest(
                model=llm_pb2.Model(provider_id=created.id, name="gw-model", type=llm_pb2.MODEL_TYPE_LLM, online=True)
            ),
            metadata=ADMIN,
        )
    ).model
    masked = {"X-Gateway-Key": "****", "X-Org": "****"}
    assert dict(created.extra_headers) == masked and created.api_key_masked == "****"

    for metadata in (user.md, ADMIN):  # an ordinary user, and the admin too
        got = (await stub.GetProvider(llm_pb2.GetProviderRequest(provider_id=created.id), metadata=metadata)).provider
        assert dict(got.extra_headers) == masked and got.api_key_masked == "****"
        listed = (await stub.ListProviders(llm_pb2.ListProvidersRequest(), metadata=metadata)).providers
        assert [dict(p.extra_headers) for p in listed if p.id == created.id] == [masked]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http:
        for token in (token_of(user), ADMIN_KEY):
            headers = {"authorization": f"Bearer {token}"}
            for path in ("/v1/providers", f"/v1/providers/{created.id}"):
                response = await http.get(path, headers=headers)
                assert response.status_code == 200
                assert GATEWAY_SECRET not in response.text and "acme-corp" not in response.text
                assert "1234" not in response.text.replace(created.id, "")

    async with app.resources.db.session() as session:
        row = await session.scalar(select(ProviderRow).where(ProviderRow.id == created.id))
    stored = f"{row.extra_headers} {row.extra_headers_encrypted} {row.api_key_hint}"
    assert GATEWAY_SECRET not in stored and "acme-corp" not in stored and "1234" not in stored

    await generate(stub, model.id, user.md)  # still sent upstream, in clear there
    assert upstream.seen[-1].headers["x-gateway-key"] == GATEWAY_SECRET
    assert upstream.seen[-1].headers["x-org"] == "acme-corp"


async def test_sending_back_the_masked_map_keeps_the_stored_values(world, upstream):
    app, stub, _ = world
    created = (
        await stub.CreateProvider(
            llm_pb2.CreateProviderRequest(
                provider=llm_pb2.Provider(
                    name="gateway",
                    type=llm_pb2.PROVIDER_TYPE_OPENAI_COMPATIBLE,
                    base_url=upstream.base_url + "/v1",
                    extra_headers=HEADERS,
                )
            ),
            metadata=ADMIN,
        )
    ).provider
    model = (
        await stub.CreateModel(
            llm_pb2.CreateModelRequest(
                model=llm_pb2.Model(provider_id=created.id, name="gw-model", type=llm_pb2.MODEL_TYPE_LLM, online=True)
            ),
            metadata=ADMIN,
        )
    ).model
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.http_port}", timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as http:
        shown = (await http.get(f"/v1/providers/{created.id}")).json()["provider"]["extra_headers"]
        response = await http.patch(
            f"/v1/providers/{created.id}",
            params={"update_mask": "extra_headers"},
            json={"extra_headers": {**shown, "X-Org": "new-org", "X-Extra": "1"}},
        )
        assert response.status_code == 200, response.text
        refused = await http.patch(
            f"/v1/providers/{created.id}",
            params={"update_mask": "extra_headers"},
            json={"extra_headers": {"X-Bad": "a\r\nInjected: yes"}},
        )
        assert refused.status_code == 400 and "line break" in refused.json()["message"]
    await generate(stub, model.id, ADMIN)
    seen = upstream.seen[-1].headers
    assert (seen["x-gateway-key"], seen["x-org"], seen["x-extra"]) == (GATEWAY_SECRET, "new-org", "1")


async def test_headers_stored_in_clear_before_the_upgrade_are_sealed_at_start(app_factory, upstream):
    upstream.reset()
    app = await app_factory(llm_local_enabled=False)
    async with app.resources.db.session() as session:  # a row as the previous release wrote it
        session.add(
            ProviderRow(
                name="legacy",
                type="openai_compatible",
                description="",
                base_url=upstream.base_url + "/v1",
                api_key_hint="",
                extra_headers=HEADERS,
                extra_headers_encrypted=None,
                config={},
                enabled=True,
            )
        )
    await app.stop()
    app = await app_factory(llm_local_enabled=False)  # the same data dir, restarted
    async with app.resources.db.session() as session:
        row = await session.scalar(select(ProviderRow).where(ProviderRow.name == "legacy"))
    assert row.extra_headers == {"X-Gateway-Key": "****", "X-Org": "****"}
    assert GATEWAY_SECRET not in (row.extra_headers_encrypted or "") and row.extra_headers_encrypted
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        model = (
            await stub.CreateModel(
                llm_pb2.CreateModelRequest(
                    model=llm_pb2.Model(
                        provider_id=row.id, name="legacy-model", type=llm_pb2.MODEL_TYPE_LLM, online=True
                    )
                ),
                metadata=ADMIN,
            )
        ).model
        await generate(stub, model.id, ADMIN)
    assert upstream.seen[-1].headers["x-gateway-key"] == GATEWAY_SECRET


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("", ""),
        ("abc", "****"),
        ("sk-" + "x" * 24 + "abcd", "****"),  # 31 characters: nothing of it
        ("sk-" + "x" * 25 + "abcd", "sk-****abcd"),  # 32 characters: its last 4
    ],
)
def test_a_secret_shows_its_last_4_characters_only_from_32_characters_on(key, shown):
    assert mask_key(key) == shown
