"""Vector store over pymilvus' MilvusClient: a Milvus server in production, or milvus-lite (a local file) when
selected (TYPECASE_VECTOR_STORE=milvus-lite); the embedded default is infra/vectors_embedded.py, same interface.

Collections share one schema: `id` (VARCHAR primary key), `vector` (FLOAT_VECTOR), an optional `metadata`
JSON field, and dynamic fields, so callers can store filterable scalars (kb_id, file_id, ...) at the top level.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .urls import error_detail, mask_url

log = logging.getLogger(__name__)

T = TypeVar("T")
UPSERT_BATCH = 500
ID_MAX_LENGTH = 512
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_CONSISTENCY = "Strong"  # reads right after writes must see them (ingest then search)
# milvus-lite (loopback): keepalive pings no more often than its gRPC server permits (5 minutes), none when idle.
LOCAL_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"invalid collection name {name!r}: letters, digits and _ only, not starting with a digit")
    return name


class VectorStore:
    """Async facade over the synchronous MilvusClient; calls run in worker threads."""

    def __init__(self, uri: str, token: str | None = None):
        self.uri = uri
        self.token = token
        self.is_local = not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))
        if self.is_local and not uri.endswith(".db"):
            # pymilvus only treats "*.db" paths as milvus-lite files; anything else would be dialled as a server.
            raise ValueError(f"a milvus-lite path must end with .db, got {uri!r}")
        self.name = "vectors/milvus-lite" if self.is_local else "vectors/milvus"
        self._client: Any = None
        # milvus-lite is not safe for concurrent use from several threads; a server client is.
        self._lock = threading.Lock() if self.is_local else None

    def __repr__(self) -> str:
        return f"VectorStore({mask_url(self.uri)!r})"

    async def _call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        if self._client is None:
            raise RuntimeError("VectorStore is not started")

        def run() -> T:
            if self._lock is None:
                return fn(*args, **kw)
            with self._lock:
                return fn(*args, **kw)

        return await asyncio.to_thread(run)

    async def start(self) -> None:
        from pymilvus import MilvusClient  # heavy import, only when vectors are used

        def connect() -> Any:
            if self.is_local:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                # pymilvus pings every 10 s, also between calls; milvus-lite's gRPC server keeps the 5-minute
                # minimum and answers GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (logged as an error). A loopback
                # connection has no NAT to keep open: ping no more often than the server allows.
                return MilvusClient(uri=self.uri, token=self.token or "", grpc_options=LOCAL_GRPC_OPTIONS)
            return MilvusClient(uri=self.uri, token=self.token or "")

        self._client = await asyncio.to_thread(connect)
        log.info("vector store connected: %s", mask_url(self.uri))

    async def stop(self) -> None:
        if self._client is not None:
            await self._call(self._client.close)  # under the lock: never close under a running call
            self._client = None

    async def health(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(5):
                names = await self._call(lambda: self._client.list_collections())
            return True, f"{self.name.split('/')[1]} ok ({len(names)} collections)"
        except Exception as exc:
            return False, f"{self.name.split('/')[1]} unavailable: {error_detail(exc)}"

    async def has_collection(self, name: str) -> bool:
        return await self._call(lambda: self._client.has_collection(_check_name(name)))

    async def ensure_collection(self, name: str, dim: int, metric: str = "COSINE") -> None:
        """Create the collection if missing (and load it); an existing one must have the same dimension."""
        _check_name(name)
        if dim <= 0:
            raise ValueError("dim must be positive")

        def ensure() -> None:
            from pymilvus import DataType, MilvusClient

            c = self._client
            if c.has_collection(name):
                existing = _vector_dim(c.describe_collection(name))
                if existing != dim:
                    raise ValueError(f"collection {name!r} has dimension {existing}, not {dim}")
                c.load_collection(name)  # a server may have released it after a restart
                return
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("metadata", DataType.JSON, nullable=True)
            index = c.prepare_index_params()
            # Exact search locally (small data); let a server choose its own index.
            index_type = "FLAT" if self.is_local else "AUTOINDEX"
            index.add_index(field_name="vector", index_type=index_type, metric_type=metric)
            if not self.is_local:
                c.create_collection(name, schema=schema, index_params=index, consistency_level=_CONSISTENCY)
                return
            # A synchronous create_index waits through AllocTimestamp, which milvus-lite does not implement (an
            # ERROR traceback in the log at every new collection); its FLAT index needs no waiting.
            c.create_collection(name, schema=schema, consistency_level=_CONSISTENCY)
            c.create_index(name, index, sync=False)
            c.load_collection(name)

        await self._call(ensure)

    async def upsert(self, name: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert or replace rows ({"id", "vector", "metadata"?, other scalars...}); returns the row count."""
        _check_name(name)
        for start in range(0, len(rows), UPSERT_BATCH):
            batch = list(rows[start : start + UPSERT_BATCH])
            await self._call(lambda b=batch: self._client.upsert(name, b))
        return len(rows)

    async def flush(self, name: str) -> None:
        """Seal pending rows: milvus-lite searches unflushed rows far slower (650 ms against 30 ms at 20k rows)."""
        await self._call(self._client.flush, name)

    async def search(
        self,
        name: str,
        vectors: Sequence[Sequence[float]],
        top_k: int = 10,
        filter: str | None = None,
        output_fields: Sequence[str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """One hit list per query vector, best first; a hit is {"id", "distance", **output fields}.

        `distance` is the metric's score: higher is closer for COSINE/IP, lower for L2. Without
        `output_fields`, hits carry `metadata` and every dynamic field.
        """
        fields = list(output_fields) if output_fields is not None else ["metadata", "$meta"]

        def run() -> list[list[dict[str, Any]]]:
            result = self._client.search(
                name,
                data=[list(v) for v in vectors],
                limit=top_k,
                filter=filter or "",
                output_fields=fields,
                consistency_level=_CONSISTENCY,
            )
            return [
                [{**dict(hit["entity"]), "id": hit["id"], "distance": hit["distance"]} for hit in hits]
                for hits in result
            ]

        _check_name(name)
        return await self._call(run)

    async def get(
        self, name: str, ids: Sequence[str], output_fields: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Rows by id (vectors included only when asked for in output_fields)."""
        fields = list(output_fields) if output_fields is not None else ["metadata", "$meta"]
        _check_name(name)
        rows = await self._call(lambda: self._client.get(name, ids=list(ids), output_fields=fields))
        return [dict(r) for r in rows]

    async def delete(self, name: str, ids: Sequence[str] | None = None, filter: str | None = None) -> None:
        """Delete by ids or by a filter expression (one of them is required, so nothing is deleted by accident)."""
        _check_name(name)
        if (ids is None) == (filter is None):
            raise ValueError("pass exactly one of ids or filter")
        if ids is not None:
            if ids:
                await self._call(lambda: self._client.delete(name, ids=list(ids)))
        else:
            if not filter or not filter.strip():
                raise ValueError("filter must not be empty")
            await self._call(lambda: self._client.delete(name, filter=filter))

    async def count(self, name: str, filter: str | None = None) -> int:
        _check_name(name)
        rows = await self._call(
            lambda: self._client.query(
                name, filter=filter or "", output_fields=["count(*)"], consistency_level=_CONSISTENCY
            )
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def drop_collection(self, name: str) -> None:
        _check_name(name)
        await self._call(lambda: self._client.drop_collection(name))

    async def list_collections(self) -> list[str]:
        return list(await self._call(lambda: self._client.list_collections()))


def _vector_dim(description: dict[str, Any]) -> int | None:
    for f in description.get("fields", []):
        if f.get("name") == "vector":
            return int(f.get("params", {}).get("dim", 0))
    return None


EMBEDDED_KINDS = ("embedded", "milvus-lite")


def create_vector_store(
    milvus_uri: str | None,
    data_dir: str | Path,
    token: str | None = None,
    embedded: str = "embedded",
    compact_dead_ratio: float = 0.5,
    compact_min_dead_rows: int = 10_000,
) -> Any:
    """The configured Milvus server; else the embedded store under data_dir: `embedded` (exact search over
    matrices persisted on disk, infra/vectors_embedded.py) or `milvus-lite` (a milvus-lite file)."""
    if milvus_uri:
        return VectorStore(milvus_uri, token=token)
    if embedded == "milvus-lite":
        return VectorStore(str(Path(data_dir).resolve() / "vectors" / "milvus.db"))
    if embedded != "embedded":
        raise ValueError(f"embedded vector store must be one of {', '.join(EMBEDDED_KINDS)}, got {embedded!r}")
    from .vectors_embedded import EmbeddedVectorStore

    return EmbeddedVectorStore(
        Path(data_dir).resolve() / "vectors" / "embedded",
        compact_dead_ratio=compact_dead_ratio,
        compact_min_dead_rows=compact_min_dead_rows,
    )
