"""The InProcess target's servicer context behaves like grpc.aio's (checked against a real server)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import wrappers_pb2

from typecase.server.gateway import InProcess, RpcFailure
from typecase.server.gateway.inprocess import CallScope

S = wrappers_pb2.StringValue


async def abort_twice(request, context):
    try:
        await context.abort(grpc.StatusCode.NOT_FOUND, "one")
    except grpc.aio.AbortError:
        pass
    await context.abort(grpc.StatusCode.INTERNAL, "two")


async def trailing_then_abort(request, context):
    context.set_trailing_metadata((("x-a", "1"),))
    await context.abort(grpc.StatusCode.NOT_FOUND, "nf")


async def abort_with_trailing(request, context):
    context.set_trailing_metadata((("x-a", "1"),))
    await context.abort(grpc.StatusCode.NOT_FOUND, "nf", (("x-b", "2"),))


async def initial_twice(request, context):
    await context.send_initial_metadata((("a", "1"),))
    try:
        await context.send_initial_metadata((("b", "1"),))
    except grpc.aio.UsageError as e:
        return S(value=f"usage: {e}")
    return S(value="no error")


async def info(request, context):
    return S(
        value=repr(
            (
                context.code(),
                context.details(),
                context.auth_context(),
                context.peer_identities(),
                context.peer_identity_key(),
            )
        )
    )


def sync_handler(request, context):
    import threading

    if request.value == "abort":
        context.abort(grpc.StatusCode.OUT_OF_RANGE, "sync abort")
    return S(value=f"sync:{threading.current_thread() is not threading.main_thread()}")


async def returns_none(request, context):
    return None


async def crash(request, context):
    raise KeyError("k")


HANDLERS = {
    "abort_twice": abort_twice,
    "trailing_then_abort": trailing_then_abort,
    "abort_with_trailing": abort_with_trailing,
    "initial_twice": initial_twice,
    "info": info,
    "sync": sync_handler,
    "none": returns_none,
    "crash": crash,
}


def _generic():
    return grpc.method_handlers_generic_handler(
        "t.T",
        {
            name: grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=S.FromString, response_serializer=S.SerializeToString
            )
            for name, fn in HANDLERS.items()
        },
    )


async def _real(name: str, value: str = "q"):
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.aio.server(migration_thread_pool=ThreadPoolExecutor(1))
    server.add_generic_rpc_handlers((_generic(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary(
                f"/t.T/{name}", request_serializer=S.SerializeToString, response_deserializer=S.FromString
            )(S(value=value))
            try:
                return ("ok", (await call).value, tuple(await call.trailing_metadata()))
            except grpc.aio.AioRpcError as e:
                return ("err", e.code(), e.details(), tuple(e.trailing_metadata()))
    finally:
        await server.stop(None)


async def _inproc(name: str, value: str = "q"):
    target = InProcess()
    target.add_generic_rpc_handlers((_generic(),))
    try:
        response, _, trailing = await target.unary(f"/t.T/{name}", S(value=value), (), "ipv4:127.0.0.1:1", CallScope())
        return ("ok", response.value, trailing)
    except RpcFailure as f:
        return ("err", f.code, f.message, f.trailing_metadata)


@pytest.mark.parametrize(
    "name", ["abort_twice", "trailing_then_abort", "abort_with_trailing", "initial_twice", "crash"]
)
async def test_same_outcome_as_grpc_aio(name):
    assert await _inproc(name) == await _real(name)


async def test_context_defaults_and_auth_context():
    assert await _inproc("info") == await _real("info")


async def test_plain_handlers_run_off_the_loop():
    assert await _inproc("sync") == ("ok", "sync:True", ())
    assert (await _inproc("sync", "abort"))[:3] == ("err", grpc.StatusCode.OUT_OF_RANGE, "sync abort")


async def test_none_response_is_an_error():
    real = await _real("none")
    ours = await _inproc("none")
    assert ours[1] == real[1] == grpc.StatusCode.UNKNOWN


async def test_unknown_method_is_unimplemented():
    ours = await _inproc("nope")
    assert ours[1] == grpc.StatusCode.UNIMPLEMENTED and ours[2] == "Method not found!"


async def test_deadline_and_time_remaining():
    seen = {}

    async def slow(request, context):
        seen["remaining"] = context.time_remaining()
        context.add_done_callback(lambda c: seen.setdefault("done", (c.done(), c.cancelled())))
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen["cancelled"] = context.cancelled()
            raise

    target = InProcess()
    target.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("t.T", {"slow": grpc.unary_unary_rpc_method_handler(slow)}),)
    )
    start = time.monotonic()
    with pytest.raises(RpcFailure) as e:
        await target.unary("/t.T/slow", S(), (), "p", CallScope(time.monotonic() + 0.05))
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and e.value.message == "Deadline Exceeded"
    assert time.monotonic() - start < 3  # ended by its 50 ms deadline, not by the handler's 5 s sleep
    assert 0 < seen["remaining"] <= 0.05 and seen["cancelled"] is True and seen["done"] == (True, True)


async def test_outside_cancellation_propagates():
    async def slow(request, context):
        await asyncio.sleep(5)

    target = InProcess()
    target.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("t.T", {"slow": grpc.unary_unary_rpc_method_handler(slow)}),)
    )

    async def call():
        return await target.unary("/t.T/slow", S(), (), "p", CallScope())

    task = asyncio.ensure_future(call())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_registered_method_handlers_are_used():
    target = InProcess()
    target.add_registered_method_handlers("t.T", {"info": grpc.unary_unary_rpc_method_handler(info)})
    response, _, _ = await target.unary("/t.T/info", S(), (), "p", CallScope())
    assert response.value.startswith("(None, ''")
