"""Downloads when the originals live in S3 (a moto S3 server on loopback): the HTTP route answers 307 with a
presigned URL that serves the file (named, typed) and honours Range itself; redirect=false streams the bytes
through the server; and another user's file is NOT_FOUND before anything is signed."""

from __future__ import annotations

import os

import httpx
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_KEY, free_port
from typecase.v1 import auth_pb2_grpc, knowledge_pb2_grpc

from .conftest import knowledge_settings
from .support import bearer, create_kb, new_user, upload, wait_done

pytestmark = pytest.mark.asyncio(loop_scope="module")
ADMIN = bearer(ADMIN_KEY)


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def s3app(tmp_path_factory, s3_endpoint):
    import grpc

    from typecase.server.app import App

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("TYPECASE_"):
                mp.delenv(name)
        mp.setenv("HF_HUB_OFFLINE", "1")
        app = App(
            knowledge_settings(
                tmp_path_factory.mktemp("s3") / "data",
                s3_endpoint=s3_endpoint,
                s3_access_key="testing",
                s3_secret_key="testing",
                s3_bucket="typecase-downloads",
                s3_region="us-east-1",
            )
        )
        await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                yield app, channel
        finally:
            await app.stop()


async def test_on_s3_a_download_redirects_to_a_presigned_url_that_serves_exact_ranges(s3app):
    app, channel = s3app
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    kb = await create_kb(stub, ADMIN, "s3-downloads")
    content = ("\n".join(f"line {i:05d} of the report" for i in range(800))).encode()
    file = await wait_done(stub, ADMIN, (await upload(stub, ADMIN, kb.id, "quarterly report.txt", content)).id)
    url = f"http://127.0.0.1:{app.http_port}/v1/files/{file.id}:download"
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as http:
        r = await http.get(url)
        assert r.status_code == 307 and r.content == b""
        location = r.headers["location"]
        assert location.startswith("http://127.0.0.1:") and "X-Amz-Signature=" in location
        # the signed URL alone (no Typecase credentials) serves the file, named and typed as the server would
        async with httpx.AsyncClient(timeout=60) as anonymous:
            whole = await anonymous.get(location)
            assert whole.status_code == 200 and whole.content == content
            assert whole.headers["content-type"].startswith("text/plain")
            assert "filename*=UTF-8''quarterly%20report.txt" in whole.headers["content-disposition"]
            part = await anonymous.get(location, headers={"range": "bytes=1000-1999"})
            assert part.status_code == 206 and part.content == content[1000:2000]
        # following the redirect with a Range header gives exactly those bytes
        r = await http.get(url, headers={"range": "bytes=-25"}, follow_redirects=True)
        assert r.status_code == 206 and r.content == content[-25:]
        # redirect=false: streamed through the server, with the server's own 206
        r = await http.get(url, params={"redirect": "false"}, headers={"range": "bytes=5-9"})
        assert r.status_code == 206 and r.content == content[5:10]

    # another user learns nothing, not even a signed URL
    other = await new_user(auth_pb2_grpc.AuthServiceStub(channel), ADMIN, "s3-stranger")
    token = dict(other)["authorization"]
    async with httpx.AsyncClient(headers={"authorization": token}, timeout=60) as http:
        r = await http.get(url)
        assert r.status_code == 404 and "location" not in r.headers
