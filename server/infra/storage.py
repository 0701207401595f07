"""Object storage: S3/MinIO for deployments, a local directory for the embedded default.

Objects are streamed in and out in chunks; neither implementation holds a whole object in memory, and an
object is visible only once completely written.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import io
import json
import logging
import os
import shutil
import unicodedata
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from .urls import error_detail

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024  # the S3 limit
CHUNK_SIZE = 1024 * 1024
S3_PART_SIZE = 8 * 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"

Data = bytes | AsyncIterable[bytes]


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    md5: str | None  # hex; stat() of an S3 multipart object cannot know it (its ETag is not an MD5)
    content_type: str | None


class ObjectTooLarge(ValueError):
    """The object exceeded max_bytes; nothing was stored."""


class ObjectNotFound(FileNotFoundError):
    pass


def safe_key(key: str) -> str:
    """Validate an object key: a relative "a/b/c" path of plain segments. Returns it unchanged."""
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:  # also rejects lone surrogates (UnicodeEncodeError)
        raise ValueError(f"object key longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise ValueError("object key must be relative")
    if "\\" in key:
        raise ValueError("object key must not contain backslashes")
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise ValueError("object key must not contain control characters")
    if any(seg in ("", ".", "..") for seg in key.split("/")):
        raise ValueError("object key must not contain empty, '.' or '..' segments")
    return key


def safe_prefix(prefix: str) -> str:
    """Validate a listing prefix: "" (everything), a key, or a key followed by "/"."""
    if prefix == "":
        return prefix
    safe_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class ObjectStorage(abc.ABC):
    name: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def health(self) -> tuple[bool, str]: ...

    @abc.abstractmethod
    async def put(
        self, key: str, data: Data, content_type: str | None = None, max_bytes: int | None = None
    ) -> ObjectInfo:
        """Store an object from bytes or an async iterator of chunks; ObjectTooLarge leaves nothing behind."""

    @abc.abstractmethod
    async def get(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Open an object (ObjectNotFound raised here) and return its chunks: `async for c in await s.get(k)`."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete an object; deleting a missing key is not an error."""

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix` (plain string prefix, like S3), sorted."""

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
            return True
        except ObjectNotFound:
            return False

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with a non-empty `prefix`; returns how many."""
        if not safe_prefix(prefix):
            raise ValueError("delete_prefix needs a non-empty prefix")
        keys = await self.list(prefix)
        for key in keys:
            await self.delete(key)
        return len(keys)

    async def read_bytes(self, key: str) -> bytes:
        """Whole object in memory: only for objects known to be small."""
        return b"".join([chunk async for chunk in await self.get(key)])

    async def presigned_get(self, key: str, expires_seconds: int, response_headers: dict[str, str]) -> str | None:
        """A URL that serves the object to anyone holding it for `expires_seconds`, with these response headers
        (content-type, content-disposition), or None when this storage cannot sign URLs (a local directory)."""
        return None


async def _chunks(data: Data) -> AsyncIterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
    else:
        async for chunk in data:
            yield chunk


# --------------------------------------------------------------------------------------------------- local


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def _create_private(path: Path):
    """A new file only its owner can read, open for binary writing."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb")


class LocalStorage(ObjectStorage):
    """Objects as files under `<root>/objects/<key>`, metadata as JSON under `<root>/meta/<key>`.

    Writes go to `<root>/tmp` and are renamed into place, so readers never see partial objects. Unlike S3,
    a key cannot be both an object and a "directory" of other objects ("a/b" and "a/b/c"). Objects are the
    users' uploads: files are 0600 and directories 0700, whatever the process umask.
    """

    def __init__(self, root_dir: str | Path):
        self.root = Path(root_dir).resolve()
        self.objects = self.root / "objects"
        self.meta = self.root / "meta"
        self.tmp = self.root / "tmp"
        self.name = "storage/local"

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    async def start(self) -> None:
        for d in (self.root, self.objects, self.meta, self.tmp):
            d.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        # Temp files of writes interrupted by a crash; nothing else writes there.
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    async def health(self) -> tuple[bool, str]:
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, self.root)
            ok = os.access(self.objects, os.W_OK)
            return ok, f"local {'ok' if ok else 'not writable'}, {usage.free // 2**20} MiB free"
        except Exception as exc:
            return False, f"local storage unavailable: {error_detail(exc)}"

    def _path(self, base: Path, key: str) -> Path:
        path = (base / safe_key(key)).resolve()
        if not path.is_relative_to(base):  # symlinks must not lead outside the root
            raise ValueError("object key resolves outside the storage root")
        return path

    async def put(
        self, key: str, data: Data, content_type: str | None = None, max_bytes: int | None = None
    ) -> ObjectInfo:
        path = self._path(self.objects, key)
        meta_path = self._path(self.meta, key)
        tmp = self.tmp / uuid.uuid4().hex
        md5, size = hashlib.md5(), 0
        f = await asyncio.to_thread(_create_private, tmp)
        try:
            try:
                async for chunk in _chunks(data):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ObjectTooLarge(f"object {key!r} exceeds {max_bytes} bytes")
                    await asyncio.to_thread(_write_hashed, f, md5, chunk)
                await asyncio.to_thread(f.flush)
            finally:
                f.close()
            info = ObjectInfo(key, size, md5.hexdigest(), content_type or DEFAULT_CONTENT_TYPE)
            await asyncio.to_thread(self._commit, tmp, path, meta_path, info)
            return info
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _commit(self, tmp: Path, path: Path, meta_path: Path, info: ObjectInfo) -> None:
        meta_tmp = tmp.with_suffix(".meta")
        with _create_private(meta_tmp) as handle:
            handle.write(json.dumps({"md5": info.md5, "content_type": info.content_type}).encode())
        for src, dst in ((meta_tmp, meta_path), (tmp, path)):
            for attempt in range(3):  # a concurrent delete may prune the parent directory in between
                try:
                    dst.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
                    os.replace(src, dst)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                except (IsADirectoryError, NotADirectoryError, FileExistsError):
                    meta_tmp.unlink(missing_ok=True)
                    raise ValueError(
                        f"object key {info.key!r} collides with another object's path (one key cannot be both "
                        "an object and a prefix of other objects in local storage)"
                    ) from None

    async def get(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        path = self._path(self.objects, key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        return _read_file(f, chunk_size)

    async def stat(self, key: str) -> ObjectInfo:
        path, meta_path = self._path(self.objects, key), self._path(self.meta, key)

        def _stat() -> ObjectInfo:
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectNotFound(key) from None
            if not path.is_file():
                raise ObjectNotFound(key)
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = {}
            return ObjectInfo(key, st.st_size, meta.get("md5"), meta.get("content_type"))

        return await asyncio.to_thread(_stat)

    async def delete(self, key: str) -> None:
        path, meta_path = self._path(self.objects, key), self._path(self.meta, key)

        def _delete() -> None:
            for p, base in ((path, self.objects), (meta_path, self.meta)):
                if p.is_dir():
                    continue  # a "directory" is not an object
                p.unlink(missing_ok=True)
                _prune_empty_dirs(p.parent, base)

        await asyncio.to_thread(_delete)

    async def list(self, prefix: str = "") -> list[str]:
        safe_prefix(prefix)
        # Walk only the deepest directory the prefix pins down.
        head = prefix.rpartition("/")[0]
        start = self._path(self.objects, head) if head else self.objects

        def _walk() -> list[str]:
            keys = []
            for dirpath, _dirs, files in os.walk(start):
                rel = Path(dirpath).relative_to(self.objects).as_posix()
                for name in files:
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
            return sorted(keys)

        return await asyncio.to_thread(_walk)


def _write_hashed(f: Any, md5: Any, chunk: bytes) -> None:
    f.write(chunk)
    md5.update(chunk)


async def _read_file(f: Any, chunk_size: int) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            yield chunk
    finally:
        f.close()


def _prune_empty_dirs(directory: Path, base: Path) -> None:
    while directory != base and directory.is_relative_to(base):
        try:
            directory.rmdir()
        except OSError:  # not empty (or already gone)
            return
        directory = directory.parent


# --------------------------------------------------------------------------------------------------- S3


class _AsyncSourceReader(io.RawIOBase):
    """A blocking file-like view of an async chunk iterator, read by the minio SDK in a worker thread.

    Each read pulls the next chunk from the event loop on demand, so at most one multipart part (plus one
    chunk) is in memory; MD5, size and the max_bytes limit are computed as data passes through.
    """

    def __init__(self, source: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop, key: str, max_bytes: int | None):
        super().__init__()
        self._source, self._loop, self._key, self._max = source, loop, key, max_bytes
        self._buf = memoryview(b"")
        self._eof = False
        self.cancelled = False
        self.size = 0
        self.md5 = hashlib.md5()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.cancelled:
            raise asyncio.CancelledError("upload cancelled")
        if not self._buf and not self._eof:
            chunk = asyncio.run_coroutine_threadsafe(_next_or_none(self._source), self._loop).result()
            if chunk is None:
                self._eof = True
            else:
                self.size += len(chunk)
                if self._max is not None and self.size > self._max:
                    raise ObjectTooLarge(f"object {self._key!r} exceeds {self._max} bytes")
                self.md5.update(chunk)
                self._buf = memoryview(chunk)
        n = len(self._buf) if n is None or n < 0 else n
        out, self._buf = self._buf[:n], self._buf[n:]
        return bytes(out)


async def _next_or_none(it: AsyncIterator[bytes]) -> bytes | None:
    try:
        while not (chunk := await anext(it)):
            pass  # skip empty chunks: an empty read means EOF to the SDK
        return chunk
    except StopAsyncIteration:
        return None


def _is_not_found(exc: S3Error) -> bool:
    return exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound") or getattr(exc.response, "status", 0) == 404


class S3Storage(ObjectStorage):
    """S3-compatible storage (MinIO, AWS, ...) via the minio SDK, whose blocking calls run in threads."""

    def __init__(
        self,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        region: str | None = None,
        secure: bool | None = None,
        *,
        connect_timeout: float = 5,
        read_timeout: float = 60,
    ):
        # The endpoint may be "host:port" or a URL whose scheme decides TLS unless `secure` says otherwise.
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        if secure is None:
            secure = parts.scheme == "https"
        self.endpoint = parts.netloc
        self.bucket = bucket
        self.region = region or None
        self.secure = secure
        self.name = "storage/s3"
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=32,
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            self.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=self.region,
            http_client=http,
        )

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"S3Storage('{scheme}://{self.endpoint}', bucket={self.bucket!r})"

    async def start(self) -> None:
        def _ensure_bucket() -> None:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=self.region)
                log.info("created bucket %s", self.bucket)
            except S3Error as exc:  # another replica created it first
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        await asyncio.to_thread(_ensure_bucket)

    async def stop(self) -> None:
        self._client._http.clear()  # close pooled connections

    async def health(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(5):
                exists = await asyncio.to_thread(self._client.bucket_exists, self.bucket)
            return exists, f"s3 {'ok' if exists else 'bucket missing'}"
        except Exception as exc:
            return False, f"s3 unreachable: {error_detail(exc)}"

    async def put(
        self, key: str, data: Data, content_type: str | None = None, max_bytes: int | None = None
    ) -> ObjectInfo:
        safe_key(key)
        content_type = content_type or DEFAULT_CONTENT_TYPE
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            if max_bytes is not None and len(data) > max_bytes:
                raise ObjectTooLarge(f"object {key!r} exceeds {max_bytes} bytes")
            md5 = hashlib.md5(data).hexdigest()
            await asyncio.to_thread(
                self._client.put_object, self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
            return ObjectInfo(key, len(data), md5, content_type)

        reader = _AsyncSourceReader(aiter(data), asyncio.get_running_loop(), key, max_bytes)
        try:
            # Unknown length: the SDK uploads S3_PART_SIZE parts and aborts the multipart upload on any error.
            # One part in flight at a time bounds memory to ~one part and leaves no upload racing the abort.
            await asyncio.to_thread(
                self._client.put_object,
                self.bucket,
                key,
                cast(BinaryIO, reader),  # a RawIOBase read in the worker thread
                -1,
                content_type=content_type,
                part_size=S3_PART_SIZE,
                num_parallel_uploads=1,
            )
        except asyncio.CancelledError:
            reader.cancelled = True  # the worker thread stops at its next read and aborts the upload
            raise
        return ObjectInfo(key, reader.size, reader.md5.hexdigest(), content_type)

    async def get(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        safe_key(key)
        try:
            resp = await asyncio.to_thread(self._client.get_object, self.bucket, key)
        except S3Error as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            raise
        return _read_response(resp, chunk_size)

    async def presigned_get(self, key: str, expires_seconds: int, response_headers: dict[str, str]) -> str | None:
        safe_key(key)
        # S3 overrides response headers only through these query parameters of a signed GET.
        params: dict[str, str | list[str] | tuple[str]] = {
            f"response-{name.lower()}": value for name, value in response_headers.items()
        }
        return await asyncio.to_thread(
            self._client.presigned_get_object,
            self.bucket,
            key,
            expires=timedelta(seconds=expires_seconds),
            response_headers=params,
        )

    async def stat(self, key: str) -> ObjectInfo:
        safe_key(key)
        try:
            st = await asyncio.to_thread(self._client.stat_object, self.bucket, key)
        except S3Error as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            raise
        etag = (st.etag or "").strip('"')
        md5 = etag if len(etag) == 32 and "-" not in etag else None  # multipart ETags are not MD5s
        return ObjectInfo(key, st.size or 0, md5, st.content_type)

    async def delete(self, key: str) -> None:
        safe_key(key)
        await asyncio.to_thread(self._client.remove_object, self.bucket, key)

    async def list(self, prefix: str = "") -> list[str]:
        safe_prefix(prefix)

        def _list() -> list[str]:
            objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            return sorted(o.object_name for o in objects if o.object_name and not o.is_dir)

        return await asyncio.to_thread(_list)

    async def delete_prefix(self, prefix: str) -> int:
        if not safe_prefix(prefix):
            raise ValueError("delete_prefix needs a non-empty prefix")
        keys = await self.list(prefix)

        def _delete() -> None:
            # Batched DeleteObjects; the SDK yields per-key errors lazily, so consume them.
            errors = list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
            if errors:
                raise OSError(f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}")

        if keys:
            await asyncio.to_thread(_delete)
        return len(keys)


async def _read_response(resp: Any, chunk_size: int) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(resp.read, chunk_size):
            yield chunk
    finally:
        resp.close()
        resp.release_conn()


def create_storage(
    *,
    data_dir: str | Path,
    s3_endpoint: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
    s3_bucket: str = "typecase",
    s3_region: str | None = None,
    s3_secure: bool | None = None,
) -> ObjectStorage:
    """S3 when an endpoint is configured, else files under `<data_dir>/storage`."""
    if s3_endpoint:
        return S3Storage(s3_endpoint, s3_access_key, s3_secret_key, s3_bucket, s3_region, s3_secure)
    return LocalStorage(Path(data_dir) / "storage")
