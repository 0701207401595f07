"""Attachments of a chat question: their checks, storing inline files in object storage, and DownloadAttachment."""

from __future__ import annotations

from typing import Any

import grpc

from typecase.server.chat.attachments import stored_body
from typecase.server.chat.convert import to_dict
from typecase.server.chat.ids import monotonic_id
from typecase.server.chat.rpc_base import ChatBase
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import chat_pb2


class AttachmentRpcs(ChatBase):
    def _check_attachments(self, request) -> None:
        if len(request.attachments) > self.settings.chat_max_attachments:
            raise invalid_argument("attachments", f"at most {self.settings.chat_max_attachments} files")
        for i, attachment in enumerate(request.attachments):
            field = f"attachments[{i}]"
            sources = [bool(attachment.url), bool(attachment.file_id), bool(attachment.data)]
            if sum(sources) != 1:
                raise invalid_argument(field, "set exactly one of url, file_id or data")
            if not attachment.name:
                raise invalid_argument(f"{field}.name", "required")
            if attachment.name in (".", ".."):  # would name a directory in the object key below
                raise invalid_argument(f"{field}.name", "must be a file name, not '.' or '..'")
            if attachment.data:
                if len(attachment.data) > self.settings.chat_max_attachment_bytes:
                    raise TypecaseError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "PAYLOAD_TOO_LARGE",
                        f"{field}.data: at most {self.settings.chat_max_attachment_bytes} bytes",
                        {"field": field},
                    )
                if self.storage is None:
                    raise invalid_argument(f"{field}.data", "inline files are not accepted here; give a url")

    async def _attachments(self, request, session_id: str) -> list[dict[str, Any]]:
        self._check_attachments(request)
        stored = []
        for attachment in request.attachments:
            item = chat_pb2.Attachment()
            item.CopyFrom(attachment)
            if attachment.data:
                key = f"chat/{session_id}/{monotonic_id()}/{attachment.name.replace('/', '_')[:200]}"
                await self.storage.put(key, bytes(attachment.data), content_type=attachment.mime_type or None)
                item.ClearField("data")
                item.url = f"object:{key}"
                item.size_bytes = len(attachment.data)
            stored.append(to_dict(item))
        return stored

    async def DownloadAttachment(self, request, context):
        row, _ = await self._message(request.message_id)  # another user's message is NOT_FOUND
        body = stored_body(
            self.storage, list(row.attachments or []), request.index, row.id, request.range, request.inline, context
        )
        async for message in body:
            yield message
