"""Contract tests for object storage: one suite, run against LocalStorage and S3Storage (on a moto S3 server)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from typecase.server.infra.storage import (
    LocalStorage,
    ObjectNotFound,
    ObjectStorage,
    ObjectTooLarge,
    S3Storage,
    create_storage,
    safe_key,
)

from .infra_support import unique

MiB = 1024 * 1024
ACCESS, SECRET = "testing-access", "testing-secret-key"


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStorage]:
    if request.param == "local":
        s: ObjectStorage = LocalStorage(tmp_path / "objects-root")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        s = S3Storage(endpoint, ACCESS, SECRET, bucket=unique("typecase-test").replace("_", "-"), region="us-east-1")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def generated(total: int, chunk: int = MiB) -> AsyncIterator[bytes]:
    """Deterministic, non-repeating-per-chunk data produced lazily (never the whole object at once)."""
    block = os.urandom(chunk)
    sent, n = 0, 0
    while sent < total:
        size = min(chunk, total - sent)
        yield n.to_bytes(8, "big") + block[8:size] if size >= 8 else block[:size]
        sent += size
        n += 1


async def md5_of(chunks: AsyncIterator[bytes]) -> tuple[str, int]:
    h, size = hashlib.md5(), 0
    async for c in chunks:
        h.update(c)
        size += len(c)
    return h.hexdigest(), size


# ----------------------------------------------------------------------------------------- basics


async def test_put_get_stat_round_trip(storage: ObjectStorage) -> None:
    data = b"hello \x00 world" * 100
    info = await storage.put("docs/a/hello.txt", data, content_type="text/plain")
    assert (info.key, info.size, info.md5, info.content_type) == (
        "docs/a/hello.txt",
        len(data),
        hashlib.md5(data).hexdigest(),
        "text/plain",
    )
    assert await storage.read_bytes("docs/a/hello.txt") == data
    st = await storage.stat("docs/a/hello.txt")
    assert (st.size, st.md5, st.content_type) == (len(data), info.md5, "text/plain")
    assert await storage.exists("docs/a/hello.txt")
    assert not await storage.exists("docs/a/other.txt")

    await storage.put("docs/a/hello.txt", b"v2")  # overwrite replaces content and metadata
    assert await storage.read_bytes("docs/a/hello.txt") == b"v2"
    assert (await storage.stat("docs/a/hello.txt")).content_type == "application/octet-stream"

    await storage.delete("docs/a/hello.txt")
    assert not await storage.exists("docs/a/hello.txt")
    await storage.delete("docs/a/hello.txt")  # deleting a missing object is fine


async def test_missing_objects_raise_not_found_eagerly(storage: ObjectStorage) -> None:
    with pytest.raises(ObjectNotFound):
        await storage.get("nope/none.bin")
    with pytest.raises(ObjectNotFound):
        await storage.stat("nope/none.bin")


async def test_empty_object_and_small_chunks(storage: ObjectStorage) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for p in (b"a", b"", b"bc", b"def"):
            yield p

    info = await storage.put("small/pieces", pieces())
    assert (info.size, info.md5) == (6, hashlib.md5(b"abcdef").hexdigest())
    assert await storage.read_bytes("small/pieces") == b"abcdef"

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    info = await storage.put("small/empty", nothing())
    assert info.size == 0 and await storage.read_bytes("small/empty") == b""


async def test_streaming_multipart_object(storage: ObjectStorage) -> None:
    """20 MiB streamed in 1 MiB chunks (several S3 parts): md5/size computed on the way, get streams it back."""
    total = 20 * MiB + 12345
    expected_md5, expected_size = await md5_of(_replay(total))
    info = await storage.put("big/blob.bin", _replay(total), content_type="application/x-test")
    assert (info.size, info.md5) == (expected_size, expected_md5)

    chunks = await storage.get("big/blob.bin", chunk_size=MiB)
    sizes: list[int] = []
    h = hashlib.md5()
    async for c in chunks:
        sizes.append(len(c))
        h.update(c)
    assert h.hexdigest() == expected_md5
    assert max(sizes) <= MiB and len(sizes) >= 20  # streamed in chunks, not returned whole
    st = await storage.stat("big/blob.bin")
    assert st.size == total and st.content_type == "application/x-test"
    assert st.md5 in (expected_md5, None)  # an S3 multipart ETag is not an MD5


def _replay(total: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        sent, n = 0, 0
        while sent < total:
            size = min(MiB, total - sent)
            yield (n.to_bytes(4, "big") * (size // 4 + 1))[:size]
            sent += size
            n += 1

    return gen()


@pytest.mark.parametrize("total", [3 * MiB, 12 * MiB], ids=["single-part", "multipart"])
async def test_max_bytes_rejects_and_leaves_nothing(storage: ObjectStorage, total: int) -> None:
    limit = total - MiB
    with pytest.raises(ObjectTooLarge):
        await storage.put("limited/too-big.bin", generated(total), max_bytes=limit)
    assert not await storage.exists("limited/too-big.bin")
    assert await storage.list("limited/") == []
    with pytest.raises(ObjectTooLarge):
        await storage.put("limited/bytes.bin", b"x" * 11, max_bytes=10)
    assert not await storage.exists("limited/bytes.bin")
    await _assert_no_leftovers(storage)

    info = await storage.put("limited/fits.bin", generated(limit), max_bytes=limit)  # exactly at the limit
    assert info.size == limit


async def _assert_no_leftovers(storage: ObjectStorage) -> None:
    if isinstance(storage, LocalStorage):
        assert list(storage.tmp.iterdir()) == []
    else:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://{storage.endpoint}",
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        assert s3.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []  # aborted


async def test_source_errors_abort_the_upload(storage: ObjectStorage) -> None:
    async def failing() -> AsyncIterator[bytes]:
        async for c in generated(9 * MiB):
            yield c
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.put("broken/upload.bin", failing())
    assert not await storage.exists("broken/upload.bin")
    await _assert_no_leftovers(storage)


# ----------------------------------------------------------------------------------------- listing, prefixes


async def test_list_and_delete_prefix(storage: ObjectStorage) -> None:
    for key in ["kb/1/a.txt", "kb/1/sub/b.txt", "kb/10/c.txt", "kb/2/d.txt", "other.txt"]:
        await storage.put(key, key.encode())
    assert await storage.list("kb/1/") == ["kb/1/a.txt", "kb/1/sub/b.txt"]
    assert await storage.list("kb/1") == ["kb/1/a.txt", "kb/1/sub/b.txt", "kb/10/c.txt"]  # plain string prefix
    assert await storage.list("") == sorted(["kb/1/a.txt", "kb/1/sub/b.txt", "kb/10/c.txt", "kb/2/d.txt", "other.txt"])
    assert await storage.list("missing/") == []

    assert await storage.delete_prefix("kb/1/") == 2
    assert await storage.list("") == ["kb/10/c.txt", "kb/2/d.txt", "other.txt"]
    with pytest.raises(ValueError):
        await storage.delete_prefix("")  # never "delete everything" by accident
    assert await storage.delete_prefix("nothing/") == 0


# ----------------------------------------------------------------------------------------- key safety

UNSAFE_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../b",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "x" * 1025,
    "é" * 600,
]


@pytest.mark.parametrize("key", UNSAFE_KEYS, ids=range(len(UNSAFE_KEYS)))
def test_safe_key_rejects(key: str) -> None:
    with pytest.raises(ValueError):
        safe_key(key)


def test_safe_key_accepts_ordinary_keys() -> None:
    for key in ["a", "kb/01J/file name (1).pdf", "ünïcode/文件.txt", "a..b/c", ".hidden/x", "x" * 1024]:
        assert safe_key(key) == key


async def test_every_operation_validates_keys(storage: ObjectStorage) -> None:
    for op in (
        lambda: storage.put("../x", b"1"),
        lambda: storage.get("../x"),
        lambda: storage.stat("/abs"),
        lambda: storage.delete("a/../../x"),
        lambda: storage.list("../"),
        lambda: storage.delete_prefix("a\\b"),
    ):
        with pytest.raises(ValueError):
            await op()


async def test_local_storage_refuses_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage = LocalStorage(tmp_path / "root")
    await storage.start()
    (storage.objects / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside"):
        await storage.put("link/evil.txt", b"x")
    assert list(outside.iterdir()) == []


async def test_local_storage_reports_path_collisions(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    await storage.start()
    await storage.put("a/b", b"object")
    with pytest.raises(ValueError, match="collides"):
        await storage.put("a/b/c", b"under an object")
    await storage.put("x/y/z", b"deep")
    with pytest.raises(ValueError, match="collides"):
        await storage.put("x/y", b"over a prefix")
    assert await storage.read_bytes("a/b") == b"object" and await storage.list("") == ["a/b", "x/y/z"]
    assert list(storage.tmp.iterdir()) == []


async def test_local_storage_writes_atomically(tmp_path: Path) -> None:
    """A reader during a write sees the old object (or none), never a partial one."""
    storage = LocalStorage(tmp_path / "root")
    await storage.start()
    await storage.put("doc", b"old")
    seen: list[bytes] = []

    async def slow() -> AsyncIterator[bytes]:
        yield b"new-part-1;"
        seen.append(await storage.read_bytes("doc"))
        yield b"new-part-2"

    await storage.put("doc", slow())
    assert seen == [b"old"]
    assert await storage.read_bytes("doc") == b"new-part-1;new-part-2"


async def test_health_and_repr_hide_secrets(storage: ObjectStorage) -> None:
    ok, detail = await storage.health()
    assert ok, detail
    assert SECRET not in repr(storage)


def test_create_storage_picks_implementation(tmp_path: Path) -> None:
    local = create_storage(data_dir=tmp_path)
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "storage").resolve()
    s3 = create_storage(
        data_dir=tmp_path, s3_endpoint="https://minio.example:9000", s3_access_key="a", s3_secret_key="b"
    )
    assert isinstance(s3, S3Storage) and s3.secure and s3.endpoint == "minio.example:9000"
    assert not create_storage(data_dir=tmp_path, s3_endpoint="minio:9000", s3_access_key="a", s3_secret_key="b").secure
