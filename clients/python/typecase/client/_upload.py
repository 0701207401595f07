"""Shared parts of uploads: reading a source in bounded chunks and building the UploadFile messages."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf import struct_pb2

from typecase.client.events import UploadProgress
from typecase.v1 import knowledge_pb2

KiB = 1024
DEFAULT_CHUNK_BYTES = 256 * KiB
MAX_CHUNK_BYTES = 1024 * KiB  # the contract's limit per UploadFile message

UploadSource = str | os.PathLike[str] | bytes | BinaryIO
ProgressCallback = Callable[[UploadProgress], None]


def to_struct(values: Mapping[str, Any] | struct_pb2.Struct | None) -> struct_pb2.Struct | None:
    if values is None or isinstance(values, struct_pb2.Struct):
        return values
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


@dataclass
class Opened:
    name: str
    size: int | None
    reader: BinaryIO
    owned: bool

    def close(self) -> None:
        if self.owned:
            self.reader.close()


def open_source(source: UploadSource, file_name: str | None) -> Opened:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return Opened(file_name or path.name, path.stat().st_size, path.open("rb"), True)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not file_name:
            raise ValueError("file_name is required when uploading bytes")
        return Opened(file_name, len(source), io.BytesIO(bytes(source)), True)
    name = file_name or os.path.basename(str(getattr(source, "name", "") or ""))
    if not name:
        raise ValueError("file_name is required for a file object without a name")
    size: int | None = None
    try:
        if source.seekable():
            position = source.tell()
            size = source.seek(0, io.SEEK_END) - position
            source.seek(position)
    except (OSError, ValueError):
        size = None
    return Opened(name, size, source, False)


def check_chunk_size(chunk_size: int) -> int:
    if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_BYTES} bytes")
    return chunk_size


def first_request(
    kb_id: str,
    opened: Opened,
    *,
    content_type: str | None,
    chunking_rule: knowledge_pb2.ChunkingRule | None,
    tags: Iterable[str],
    metadata: Mapping[str, Any] | struct_pb2.Struct | None,
    allow_duplicate: bool,
) -> knowledge_pb2.UploadFileRequest:
    return knowledge_pb2.UploadFileRequest(
        kb_id=kb_id,
        file_name=opened.name,
        content_type=content_type or "",
        chunking_rule=chunking_rule,
        tags=list(tags),
        metadata=to_struct(metadata),
        size_bytes=opened.size or 0,
        allow_duplicate=allow_duplicate,
    )


class Progress:
    """Counts the bytes handed to gRPC and reports them; remembers an exception the callback raised so that the
    caller can re-raise it after gRPC cancelled the upload."""

    def __init__(self, opened: Opened, callback: ProgressCallback | None) -> None:
        self.opened = opened
        self.callback = callback
        self.sent = 0
        self.error: BaseException | None = None

    def add(self, count: int) -> None:
        self.sent += count
        if self.callback is not None:
            try:
                self.callback(UploadProgress(self.opened.name, self.sent, self.opened.size))
            except BaseException as error:
                self.error = error
                raise
