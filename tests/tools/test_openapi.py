"""OpenAPI providers: a real Starlette service with an API key and its OpenAPI document on loopback."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from tests.tools.servers import start, stop
from tests.tools.support import admin, call, new_user, reason, to_dict, tool_by_name
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")
KEY = "svc-key-7c1e5a9d0b3f"


@pytest.fixture(scope="module")
def service():
    proc, port = start("tests.tools.openapi_service", "{port}", KEY)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def openapi_provider(name: str, base: str, key: str = KEY, **source) -> tools_pb2.ToolProvider:
    return tools_pb2.ToolProvider(
        name=name,
        kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
        openapi=tools_pb2.OpenApiSource(
            auth=tools_pb2.ToolAuth(type=tools_pb2.TOOL_AUTH_TYPE_API_KEY_HEADER, name="X-API-Key", credential=key),
            **({"document_url": f"{base}/openapi.json"} | source),
        ),
    )


async def test_an_openapi_service_is_imported_and_two_operations_called_the_key_never_read_back(
    tapp, tchannel, service
):
    user = await new_user(tchannel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=openapi_provider("pets", service)), metadata=user.md
        )
    ).provider
    assert provider.tool_count == 3 and provider.openapi.auth.credential_set and not provider.openapi.auth.credential
    create = await tool_by_name(user, provider.id, "createPet")
    body = to_dict(create)["parameters"]["properties"]["body"]
    assert body["properties"]["tag"] == {"type": "string", "enum": ["dog", "cat"]}  # $ref resolved
    created = await call(user, create.id, {"body": {"name": "Tom", "tag": "cat"}})
    pet_id = json.loads(created.text)["id"]
    get = await tool_by_name(user, provider.id, "getPet")
    assert to_dict(get)["parameters"]["required"] == ["pet_id"]
    fetched = await call(user, get.id, {"pet_id": pet_id})
    assert fetched.structured.struct_value.fields["name"].string_value == "Tom"
    listed = await call(user, (await tool_by_name(user, provider.id, "listPets")).id, {"limit": 1})
    assert len(json.loads(listed.text)) == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, get.id, {"pet_id": "404"})
    assert reason(caught.value) == "TOOL_FAILED" and "HTTP 404" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, create.id, {"body": {"tag": "cow"}})
    assert reason(caught.value) == "TOOL_ARGUMENTS_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a service that echoes the key does not leak it
        await call(user, get.id, {"pet_id": "echo-key"})
    assert "HTTP 403" in caught.value.details() and "key **** may not" in caught.value.details()
    assert KEY not in caught.value.details()

    # Every read, over gRPC and REST, shows that a key is set and never the key.
    reads = [to_dict(provider)]
    reads.append(
        to_dict(
            await user.tools.GetToolProvider(
                tools_pb2.GetToolProviderRequest(provider_id=provider.id), metadata=user.md
            )
        )
    )
    reads.append(to_dict(await user.tools.ListToolProviders(tools_pb2.ListToolProvidersRequest(), metadata=user.md)))
    reads.append(to_dict(await user.tools.ListTools(tools_pb2.ListToolsRequest(page_size=1000), metadata=user.md)))
    reads.append(to_dict(await user.tools.GetTool(tools_pb2.GetToolRequest(tool_id=get.id), metadata=user.md)))
    headers = {"authorization": f"Bearer {user.credential}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{tapp.http_port}", headers=headers) as http:
        for path in ("/v1/tool-providers", f"/v1/tool-providers/{provider.id}", "/v1/tools", f"/v1/tools/{get.id}"):
            reply = await http.get(path)
            assert reply.status_code == 200
            reads.append(reply.text)
    root = admin(tchannel)
    reads.append(
        to_dict(
            await root.tools.GetToolProvider(
                tools_pb2.GetToolProviderRequest(provider_id=provider.id), metadata=root.md
            )
        )
    )
    assert all(KEY not in json.dumps(read) for read in reads)


async def test_a_wrong_key_is_the_services_refusal(tchannel, service):
    user = await new_user(tchannel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=openapi_provider("wrong", service, key="nope")),
            metadata=user.md,
        )
    ).provider
    get = await tool_by_name(user, provider.id, "getPet")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, get.id, {"pet_id": "1"})
    assert reason(caught.value) == "TOOL_FAILED" and "HTTP 401: bad api key" in caught.value.details()
    # Updating the key (only the credential) makes the same tool work.
    fixed = tools_pb2.ToolProvider(
        id=provider.id,
        openapi=tools_pb2.OpenApiSource(
            document_url=f"{service}/openapi.json",
            auth=tools_pb2.ToolAuth(type=tools_pb2.TOOL_AUTH_TYPE_API_KEY_HEADER, name="X-API-Key", credential=KEY),
        ),
    )
    await user.tools.UpdateToolProvider(tools_pb2.UpdateToolProviderRequest(provider=fixed), metadata=user.md)
    assert json.loads((await call(user, get.id, {"pet_id": "1"})).text)["name"] == "Rex"


async def test_a_yaml_document_given_as_text_is_imported(tchannel, service):
    import yaml

    from tests.tools.openapi_service import DOCUMENT

    user = await new_user(tchannel)
    text = yaml.safe_dump({**DOCUMENT, "servers": [{"url": f"{service}/api"}]})
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=openapi_provider("yaml", service, document=text, document_url="")
            ),
            metadata=user.md,
        )
    ).provider
    assert provider.tool_count == 3
    get = await tool_by_name(user, provider.id, "getPet")
    assert json.loads((await call(user, get.id, {"pet_id": "1"})).text)["name"] == "Rex"


@pytest.mark.parametrize(
    "document, problem",
    [
        ("not: [valid", "not JSON or YAML"),
        ('{"swagger": "2.0", "paths": {}}', "only OpenAPI 3.0 and 3.1"),
        ('{"openapi": "3.0.0", "paths": {"/x": {"get": {"parameters": [{"$ref": "#/nope"}]}}}}', "unresolvable"),
        ('{"openapi": "3.0.0", "paths": {"/x": {"get": {"parameters": [{"$ref": "http://evil/x"}]}}}}', "only local"),
    ],
)
async def test_a_bad_document_is_refused_naming_the_problem(tchannel, document, problem):
    user = await new_user(tchannel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name="bad",
                    kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                    openapi=tools_pb2.OpenApiSource(document=document),
                )
            ),
            metadata=user.md,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and problem in caught.value.details()


async def test_a_self_referencing_schema_is_cut_not_expanded_forever(tchannel):
    user = await new_user(tchannel)
    document = {
        "openapi": "3.1.0",
        "servers": [{"url": "http://127.0.0.1:9"}],
        "components": {
            "schemas": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/components/schemas/Node"}}}}
        },
        "paths": {
            "/n": {
                "post": {
                    "operationId": "node",
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}},
                }
            }
        },
    }
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=tools_pb2.ToolProvider(
                    name="tree",
                    kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                    openapi=tools_pb2.OpenApiSource(document=json.dumps(document)),
                )
            ),
            metadata=user.md,
        )
    ).provider
    node = await tool_by_name(user, provider.id, "node")
    assert to_dict(node)["parameters"]["properties"]["body"]["properties"]["child"] == {}


async def test_a_text_imported_provider_keeps_its_tools_through_header_updates_and_refreshes(tchannel, service):
    from tests.tools.openapi_service import DOCUMENT

    user = await new_user(tchannel)
    document = json.dumps({**DOCUMENT, "servers": [{"url": f"{service}/api"}]})
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(
                provider=openapi_provider("text", service, document=document, document_url="")
            ),
            metadata=user.md,
        )
    ).provider
    updated = (
        await user.tools.UpdateToolProvider(
            tools_pb2.UpdateToolProviderRequest(
                provider=tools_pb2.ToolProvider(id=provider.id, headers={"X-Trace": "1"}),
                update_mask={"paths": ["headers"]},
            ),
            metadata=user.md,
        )
    ).provider
    assert updated.tool_count == 3 and dict(updated.headers) == {"X-Trace": "****"}
    refreshed = (
        await user.tools.RefreshToolProvider(
            tools_pb2.RefreshToolProviderRequest(provider_id=provider.id), metadata=user.md
        )
    ).provider
    assert refreshed.tool_count == 3 and refreshed.last_error == ""
    get = await tool_by_name(user, provider.id, "getPet")
    assert json.loads((await call(user, get.id, {"pet_id": "1"})).text)["name"] == "Rex"


async def test_a_changed_credential_is_used_by_the_next_call(tchannel, service):
    """Calls keep the provider's opened secrets in memory: an update must replace them, never leave the old key."""
    user = await new_user(tchannel)
    provider = (
        await user.tools.CreateToolProvider(
            tools_pb2.CreateToolProviderRequest(provider=openapi_provider("rekeyed", service)), metadata=user.md
        )
    ).provider
    get = await tool_by_name(user, provider.id, "getPet")
    assert json.loads((await call(user, get.id, {"pet_id": "1"})).text)["name"] == "Rex"

    async def rekey(key: str) -> None:
        message = openapi_provider("rekeyed", service, key=key)
        message.id = provider.id
        await user.tools.UpdateToolProvider(
            tools_pb2.UpdateToolProviderRequest(provider=message, update_mask={"paths": ["openapi"]}), metadata=user.md
        )

    await rekey("not-the-key")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(user, get.id, {"pet_id": "1"})
    assert reason(caught.value) == "TOOL_FAILED" and "401" in caught.value.details()
    await rekey(KEY)
    assert json.loads((await call(user, get.id, {"pet_id": "1"})).text)["name"] == "Rex"
