"""Interceptors see the same calls in process as on the real grpc.aio server, and can abort."""

from __future__ import annotations

import base64

import pytest
from support import Harness, RecordingInterceptor

HEADERS = {
    "Authorization": "Bearer t",
    "Grpc-Metadata-Tenant": "acme",
    "X-Trace-Id": "tr-1",
    "Grpc-Metadata-Raw-Bin": base64.b64encode(b"\x00\xff").decode(),
}


def _user_metadata(md):
    return [(k, v) for k, v in md if k not in ("user-agent", "grpc-accept-encoding", "grpc-timeout")]


@pytest.mark.parametrize("path", ["/v1/shelves/s1/books/b1", "/v1/shelves/s1/books/b1:watch?count=1"])
async def test_same_method_and_metadata_on_both_targets(pb, path):
    seen = {}
    for mode in ("inprocess", "channel"):
        icpt = RecordingInterceptor()
        async with Harness(pb, mode, interceptors=(icpt,)) as h:
            r = await h.client.get(path, headers=HEADERS)
            assert r.status_code == 200
        ((method, md),) = icpt.calls
        seen[mode] = (method, _user_metadata(md))
    assert seen["inprocess"][0] == seen["channel"][0]
    assert seen["inprocess"][0] in ("/gwtest.v1.LibraryService/GetBook", "/gwtest.v1.LibraryStreams/WatchBook")
    # the same pairs (the wire may reorder keys)
    assert sorted(seen["inprocess"][1]) == sorted(seen["channel"][1])
    md = dict(seen["inprocess"][1])
    assert md["tenant"] == "acme" and md["raw-bin"] == b"\x00\xff" and md["x-trace-id"] == "tr-1"


@pytest.mark.parametrize("mode", ["inprocess", "channel"])
@pytest.mark.parametrize("path", ["/v1/shelves/s1/books/b1", "/v1/shelves/s1/books/b1:watch?count=2"])
async def test_interceptor_can_abort(pb, mode, path):
    async with Harness(pb, mode, interceptors=(RecordingInterceptor(),)) as h:
        r = await h.client.get(path, headers={"Grpc-Metadata-X-Deny": "1"})
        assert r.status_code == 403
        assert r.json() == {"code": 7, "message": "denied by interceptor", "details": []}


async def test_interceptor_order_is_grpcs(pb):
    order = []

    class Tag(RecordingInterceptor):
        def __init__(self, name):
            super().__init__()
            self.name = name

        async def intercept_service(self, continuation, details):
            order.append(self.name)
            return await continuation(details)

    for mode in ("inprocess", "channel"):
        order.clear()
        async with Harness(pb, mode, interceptors=(Tag("a"), Tag("b"), Tag("c"))) as h:
            await h.client.get("/v1/shelves/s1/books/b1")
        assert order == ["a", "b", "c"], mode
