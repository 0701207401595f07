"""The catalogue on PostgreSQL and MariaDB (the other tools tests run on the embedded SQLite): providers created,
tools listed by category and keyword (LIKE with escapes), called, and another user's provider not found."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format
from sqlalchemy.engine import make_url

from tests.infra.infra_support import MYSQL_ADMIN_URL, PG_ADMIN_URL, mysql_exec, pg_exec, unique
from tests.tools.support import call, new_user, reason
from typecase.v1 import tools_pb2

pytestmark = pytest.mark.asyncio(loop_scope="package")
DOCUMENT = json.dumps(
    {
        "openapi": "3.1.0",
        "servers": [{"url": "http://127.0.0.1:9"}],
        "paths": {
            "/a": {"get": {"operationId": "get_a", "summary": "100% of a_b"}},
            "/b": {"post": {"operationId": "b", "summary": "Plain"}},
        },
    }
)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_the_catalogue_on_a_server_database(tmp_path, dialect):
    from tests.tools.conftest import tool_settings
    from typecase.server.app import App

    name = unique("tc_tools")
    if dialect == "postgresql":
        await pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"')
        url, drop = (
            make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name),
            (pg_exec, PG_ADMIN_URL, f'DROP DATABASE "{name}" WITH (FORCE)'),
        )
    else:
        await mysql_exec(MYSQL_ADMIN_URL, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url, drop = (
            make_url(MYSQL_ADMIN_URL).set(drivername="mysql+aiomysql", database=name),
            (mysql_exec, MYSQL_ADMIN_URL, f"DROP DATABASE `{name}`"),
        )
    app = App(tool_settings(tmp_path / "data", database_url=url.render_as_string(hide_password=False)))
    try:
        await app.start()
        await app.servicers["ToolService"].start()  # seeding twice changes nothing
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            owner, other = await new_user(channel, "dbowner"), await new_user(channel, "dbother")
            provider = (
                await owner.tools.CreateToolProvider(
                    tools_pb2.CreateToolProviderRequest(
                        provider=tools_pb2.ToolProvider(
                            name="db",
                            kind=tools_pb2.TOOL_PROVIDER_KIND_OPENAPI,
                            headers={"X-Key": "v"},
                            openapi=tools_pb2.OpenApiSource(document=DOCUMENT),
                        )
                    ),
                    metadata=owner.md,
                )
            ).provider
            assert provider.tool_count == 2
            found = await owner.tools.ListTools(tools_pb2.ListToolsRequest(keyword="100% OF A_"), metadata=owner.md)
            assert [t.name for t in found.tools] == ["get_a"]
            for literal in ("1%a", "of_a"):  # % and _ match themselves only ("of a" is there)
                assert not (
                    await owner.tools.ListTools(tools_pb2.ListToolsRequest(keyword=literal), metadata=owner.md)
                ).tools
            builtins = await owner.tools.ListTools(tools_pb2.ListToolsRequest(provider_id="builtin"), metadata=owner.md)
            assert len(builtins.tools) == 4
            # the listing reads parameters as stored JSON text (a cast): each backend hands back the schema itself
            timer = next(t for t in builtins.tools if t.name == "current_time")
            assert json_format.MessageToDict(timer.parameters)["properties"]["timezone"]["type"] == "string"
            assert (await call(owner, "builtin-current_time", {"timezone": "UTC"})).text.endswith("+00:00")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(other, found.tools[0].id)
            assert reason(caught.value) == "TOOL_NOT_FOUND"
            await owner.tools.DeleteToolProvider(
                tools_pb2.DeleteToolProviderRequest(provider_id=provider.id), metadata=owner.md
            )
            assert not (
                await owner.tools.ListTools(tools_pb2.ListToolsRequest(provider_id=provider.id), metadata=owner.md)
            ).tools
    finally:
        await app.stop()
        await drop[0](*drop[1:])
