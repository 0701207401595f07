"""Files attached to a question, as the model sees them.

- Images (png, jpeg, gif, webp) become image parts of the question: inline data as a data: URI, an https URL as
  is. Only a model with the vision capability takes them; any other is refused before the turn starts, with the
  reason MODEL_CAPABILITY_MISSING naming the model.
- Documents are read as text by the knowledge parsers (the `DocumentReader` app.py hands in, in capped parse
  processes) and put before the question, each cut at chat_attachment_max_chars and all of them within what the
  model's context leaves once the question and the system prompt are in; a cut says so in the prompt. When a
  scratch index runs (scratch.py), documents that do not fit whole go there instead and `indexed` names them. Documents
  given by URL are not fetched (only inline data is read).
- Stored attachments (inline data, kept under an `object:` url) are downloadable by whoever sees the message
  (`stored_body`, the same HttpBody streaming as knowledge files: ranges, Content-Disposition).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.v1 import chat_pb2, common_pb2, llm_pb2

IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}
IMAGE_EXTENSIONS = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


class DocumentReader(Protocol):
    async def read_text(self, name: str, mime_type: str, data: bytes, max_chars: int) -> tuple[str, bool]:
        """The document's text (at most max_chars) and whether it was cut; TypecaseError when it cannot be read
        (UNSUPPORTED_FILE_TYPE, PARSE_FAILED)."""
        ...

    async def chunk_text(self, text: str, chunk_tokens: int) -> list[str]:
        """`text` in chunks of at most `chunk_tokens` (the knowledge chunker's), for the scratch index."""
        ...


@dataclass
class ForModel:
    images: list[llm_pb2.ContentPart] = field(default_factory=list)
    documents: list[tuple[str, str, bool]] = field(default_factory=list)  # name, text, cut
    indexed: list[str] = field(default_factory=list)  # names of documents moved to the scratch index (scratch.py)

    def question(self, question: str, max_chars: int) -> str:
        """The question preceded by the documents, within `max_chars` in all."""
        if not self.documents and not self.indexed:
            return question
        blocks = [
            f'Attached file "{name}": too long for the context, so it was indexed; passages of it relevant to '
            "the question are given separately."
            for name in self.indexed
        ]
        room = max(0, max_chars - len(question) - sum(len(b) + 2 for b in blocks))
        for name, text, cut in self.documents:
            header = f'Attached file "{name}"' + (" (cut: only its beginning is shown)" if cut else "") + ":\n"
            if room <= len(header) + 50:
                blocks.append(f'Attached file "{name}": left out, the model\'s context has no room for it.')
                continue
            if len(text) > room - len(header):
                text, header = (
                    text[: room - len(header)],
                    f'Attached file "{name}" (cut: only its beginning is shown):\n',
                )
            blocks.append(header + text)
            room -= len(header) + len(text)
        return "\n\n".join(blocks) + "\n\nQuestion: " + question

    def message(self, text: str) -> llm_pb2.ChatMessage:
        if not self.images:
            return llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=text)
        return llm_pb2.ChatMessage(
            role=common_pb2.MESSAGE_ROLE_USER, parts=[llm_pb2.ContentPart(text=text), *self.images]
        )


def image_type(attachment: chat_pb2.Attachment) -> str | None:
    if attachment.mime_type in IMAGE_TYPES:
        return attachment.mime_type
    name = attachment.name.lower()
    return next((mime for ext, mime in IMAGE_EXTENSIONS.items() if name.endswith(ext)), None)


async def for_model(
    attachments: list[chat_pb2.Attachment], model: llm_pb2.Model, reader: DocumentReader | None, max_chars: int
) -> ForModel:
    """What the model gets of `attachments` (as sent: inline data still in place)."""
    out = ForModel()
    for i, attachment in enumerate(attachments):
        mime = image_type(attachment)
        if mime is not None:
            if not model.capabilities.vision:
                raise TypecaseError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "MODEL_CAPABILITY_MISSING",
                    f"model {model.name!r} cannot see images (its capabilities say so; an admin can change them): "
                    f"attach {attachment.name!r} in a chat with a vision model",
                    {"model_id": model.id, "model": model.name, "capability": "vision", "field": f"attachments[{i}]"},
                )
            if attachment.data:
                uri = f"data:{mime};base64,{base64.b64encode(attachment.data).decode()}"
                out.images.append(llm_pb2.ContentPart(image=llm_pb2.ImagePart(url=uri)))
            elif attachment.url.startswith("https://"):
                out.images.append(llm_pb2.ContentPart(image=llm_pb2.ImagePart(url=attachment.url)))
            continue
        if not attachment.data:
            continue  # documents by URL or knowledge file are kept with the message, not read
        if reader is None:
            raise invalid_argument(f"attachments[{i}]", "documents cannot be read on this server")
        try:
            text, cut = await reader.read_text(attachment.name, attachment.mime_type, bytes(attachment.data), max_chars)
        except TypecaseError as error:
            error.metadata.setdefault("field", f"attachments[{i}]")
            raise
        out.documents.append((attachment.name, text, cut))
    return out


STORED_PREFIX = "object:"


def stored_body(storage, attachments: list, index: int, message_id: str, range_spec: str, inline: bool, context):
    """The HttpBody stream of a message's `index`-th attachment; NOT_FOUND when there is none or it has no stored
    copy (given by URL or knowledge-base file id)."""
    from typecase.server.rpc.downloads import object_body
    from typecase.server.rpc.errors import not_found

    item = attachments[index] if 0 <= index < len(attachments) else None
    url = str((item or {}).get("url") or "")
    if item is None or not url.startswith(STORED_PREFIX) or storage is None:
        raise not_found("attachment", f"{message_id}/{index}")
    return object_body(
        storage,
        url[len(STORED_PREFIX) :],
        size=int(item.get("sizeBytes") or item.get("size_bytes") or 0),
        mime_type=str(item.get("mimeType") or item.get("mime_type") or "application/octet-stream"),
        name=str(item.get("name") or "attachment"),
        range_spec=range_spec,
        inline=inline,
        context=context,
    )
