"""Checks of caller input for the knowledge RPCs (names, tags, metadata) and the errors they raise about files."""

from __future__ import annotations

import json
import unicodedata
from pathlib import PurePosixPath
from typing import Any

import grpc
from google.protobuf import json_format

from typecase.server.knowledge import parsers
from typecase.server.knowledge.models import (
    KnowledgeFileRow,
)
from typecase.server.rpc.errors import TypecaseError, invalid_argument

MAX_NAME_CHARS = 255
MAX_DESCRIPTION_CHARS = 10_000
MAX_TAGS, MAX_TAG_CHARS = 32, 64
MAX_METADATA_BYTES = 16 * 1024


def clean_name(name: str, field: str) -> str:
    name = PurePosixPath(unicodedata.normalize("NFC", name or "").replace("\\", "/")).name.strip()
    if not name:
        raise invalid_argument(field, "required")
    if name == "..":
        raise invalid_argument(field, "must be a file name, not '..'")
    if len(name) > MAX_NAME_CHARS:
        raise invalid_argument(field, f"at most {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise invalid_argument(field, "must not contain control characters")
    return name


def clean_tags(tags, field: str = "tags") -> list[str]:
    out: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_CHARS or "|" in tag or any(unicodedata.category(c) == "Cc" for c in tag):
            raise invalid_argument(field, f"each tag must be 1 to {MAX_TAG_CHARS} characters, without '|'")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise invalid_argument(field, f"at most {MAX_TAGS} tags")
    return out


def clean_metadata(message, present: bool, field: str = "metadata") -> dict[str, Any]:
    if not present:
        return {}
    data = json_format.MessageToDict(message)
    if len(json.dumps(data, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise invalid_argument(field, f"at most {MAX_METADATA_BYTES} bytes of JSON")
    return data


def tags_index(tags: list[str]) -> str:
    return "|" + "|".join(tags) + "|" if tags else ""


def file_too_large(limit: int) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "FILE_TOO_LARGE",
        f"the file exceeds the maximum size of {limit} bytes",
        {"max_bytes": str(limit)},
    )


def unsupported(message: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_FILE_TYPE",
        message,
        {"supported": ",".join(parsers.SUPPORTED_EXTENSIONS)},
    )


def duplicate(existing: KnowledgeFileRow) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.ALREADY_EXISTS,
        "DUPLICATE_FILE",
        f"the knowledge base already has this content as {existing.name!r} ({existing.id})",
        {"file_id": existing.id, "md5": existing.md5},
    )
