"""Small helpers shared by the chat tests."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from typecase.v1 import chat_pb2


def reason(error: grpc.aio.AioRpcError) -> str:
    raw = dict(error.trailing_metadata()).get("grpc-status-details-bin")
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return error_details_pb2.ErrorInfo()


def kinds(events) -> list[str]:
    return [e.event.WhichOneof("kind") for e in events]


def text_of(events) -> str:
    return "".join(e.event.token.text for e in events if e.event.WhichOneof("kind") == "token")


async def new_session(who, **fields) -> chat_pb2.Session:
    return (
        await who.chat.CreateSession(chat_pb2.CreateSessionRequest(session=chat_pb2.Session(**fields)), metadata=who.md)
    ).session


async def chat_all(who, session_id: str, content: str, **fields) -> list[chat_pb2.ChatResponse]:
    return [
        m
        async for m in who.chat.Chat(
            chat_pb2.ChatRequest(session_id=session_id, content=content, **fields), metadata=who.md
        )
    ]


async def messages(who, session_id: str, **fields) -> list[chat_pb2.Message]:
    return list(
        (
            await who.chat.ListMessages(
                chat_pb2.ListMessagesRequest(session_id=session_id, page_size=500, **fields), metadata=who.md
            )
        ).messages
    )


async def get_session(who, session_id: str) -> chat_pb2.Session:
    return (await who.chat.GetSession(chat_pb2.GetSessionRequest(session_id=session_id), metadata=who.md)).session


def as_chat(events) -> list[chat_pb2.ChatResponse]:
    """Turn events of either stream (Chat or StreamTurnEvents: one wire layout) as ChatResponse messages, for
    comparing by value (Struct fields have no canonical byte order)."""
    return [chat_pb2.ChatResponse.FromString(e.SerializeToString()) for e in events]
