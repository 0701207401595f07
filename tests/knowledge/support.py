"""gRPC helpers for the knowledge tests."""

from __future__ import annotations

import asyncio

import grpc
from google.rpc import error_details_pb2, status_pb2

from typecase.v1 import auth_pb2
from typecase.v1 import knowledge_pb2 as pb

PIECE = 64 * 1024


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def reason(error: grpc.aio.AioRpcError) -> str:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    for detail in status_pb2.Status.FromString(raw).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def file_reason(file: pb.KnowledgeFile) -> str:
    for detail in file.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def upload(stub, md, kb_id: str, name: str, data: bytes, piece: int = PIECE, **first) -> pb.KnowledgeFile:
    async def messages():
        yield pb.UploadFileRequest(kb_id=kb_id, file_name=name, chunk=data[:piece], **first)
        for start in range(piece, len(data), piece):
            yield pb.UploadFileRequest(chunk=data[start : start + piece])

    return (await stub.UploadFile(messages(), metadata=md)).file


async def watch(stub, md, file_id: str, timeout: float = 120) -> list[pb.WatchFileResponse]:
    async def run():
        return [event async for event in stub.WatchFile(pb.WatchFileRequest(file_id=file_id), metadata=md)]

    return await asyncio.wait_for(run(), timeout)


async def wait_done(stub, md, file_id: str, timeout: float = 120) -> pb.KnowledgeFile:
    events = await watch(stub, md, file_id, timeout)
    assert events[-1].status in (pb.FILE_STATUS_DONE, pb.FILE_STATUS_FAILED)
    return (await stub.GetFile(pb.GetFileRequest(file_id=file_id), metadata=md)).file


async def create_kb(stub, md, name: str, **kw) -> pb.KnowledgeBase:
    reply = await stub.CreateKnowledgeBase(
        pb.CreateKnowledgeBaseRequest(knowledge_base=pb.KnowledgeBase(name=name, **kw)), metadata=md
    )
    return reply.knowledge_base


async def search(stub, md, kb_ids, query: str, **kw) -> list[pb.SearchHit]:
    return list((await stub.Search(pb.SearchRequest(kb_ids=kb_ids, query=query, **kw), metadata=md)).hits)


async def new_user(auth_stub, admin_md, username: str) -> tuple[tuple[str, str], ...]:
    password = "correct horse battery"
    await auth_stub.CreateUser(
        auth_pb2.CreateUserRequest(
            user=auth_pb2.User(username=username, password=password, role=auth_pb2.USER_ROLE_USER)
        ),
        metadata=admin_md,
    )
    login = await auth_stub.Login(auth_pb2.LoginRequest(username=username, password=password))
    return bearer(login.access_token)
