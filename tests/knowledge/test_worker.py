"""`typecase worker` processes in the production topology: the API server enqueues, workers take jobs from a Redis
stream, and all of them share SQL, object storage and a Milvus server (milvus-lite run as a gRPC server). A worker
SIGKILLed in the middle of a file leaves it unfinished; a restarted worker retakes it once the lease expires and
completes it with the right chunks, no duplicates."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import grpc
import pytest
import redis
from sqlalchemy import func, select

from tests.conftest import ADMIN_KEY, REDIS_URL, free_port
from typecase.server.infra.queue import JobRow
from typecase.server.knowledge.ingest import collection_name
from typecase.server.knowledge.models import KnowledgeBaseRow, KnowledgeChunkRow
from typecase.v1 import knowledge_pb2 as pb
from typecase.v1 import knowledge_pb2_grpc

from . import files
from .support import bearer, create_kb, upload, wait_done

ADMIN = bearer(ADMIN_KEY)
REDIS_DB = 8
LEASE = 2.0


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def milvus_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "milvus.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "milvus"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def redis_db():
    url = f"{REDIS_URL.rstrip('/')}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


class Worker:
    def __init__(self, env: dict[str, str], log_path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "typecase.server", "worker"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()


async def status(stub, file_id: str) -> pb.KnowledgeFile:
    return (await stub.GetFile(pb.GetFileRequest(file_id=file_id), metadata=ADMIN)).file


@pytest.mark.timeout(240)
async def test_worker_killed_mid_file_is_retaken_and_completes_once(app_factory, tmp_path, milvus_server, redis_db):
    data_dir = tmp_path / "data"
    stream = f"typecase:test-jobs:{uuid.uuid4().hex[:8]}"
    shared = {
        "redis_url": redis_db,
        "milvus_uri": milvus_server,
        "jobs_stream": stream,
        "jobs_lease_seconds": LEASE,
        "jobs_poll_seconds": 0.3,
    }
    app = await app_factory(data_dir=data_dir, knowledge_worker_in_process=False, **shared)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TYPECASE_DATA_DIR": str(data_dir),
        "TYPECASE_KNOWLEDGE_INGEST_STEP_DELAY_SECONDS": "0.4",
        "TYPECASE_KNOWLEDGE_EMBED_BATCH_SIZE": "2",
        "TYPECASE_JOBS_SHUTDOWN_GRACE_SECONDS": "1",
        **{f"TYPECASE_{k.upper()}": str(v) for k, v in shared.items()},
    }
    workers: list[Worker] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
            kb = await create_kb(stub, ADMIN, "durable")
            rule = pb.ChunkingRule(chunk_size=40, chunk_overlap=0)
            text = files.long_english(8, "The durable answer is forty-two.", 5)
            expected = (
                await stub.PreviewChunks(
                    pb.PreviewChunksRequest(kb_id=kb.id, text=text, chunking_rule=rule), metadata=ADMIN
                )
            ).total_chunks
            assert expected >= 12
            f = await upload(stub, ADMIN, kb.id, "durable.txt", text.encode(), chunking_rule=rule)
            await asyncio.sleep(1.0)
            assert (await status(stub, f.id)).status == pb.FILE_STATUS_QUEUED  # the server runs no jobs itself

            workers.append(Worker(env, tmp_path / "worker1.log"))
            deadline = time.monotonic() + 90
            while True:
                current = await status(stub, f.id)
                if current.status == pb.FILE_STATUS_EMBEDDING and current.progress_percent >= 25:
                    break
                assert current.status != pb.FILE_STATUS_DONE, "the worker finished before it could be killed"
                assert time.monotonic() < deadline, workers[0].output()
                await asyncio.sleep(0.1)
            workers[0].stop(signal.SIGKILL)
            killed_at = await status(stub, f.id)
            await asyncio.sleep(LEASE + 1)
            stalled = await status(stub, f.id)
            assert stalled.status == pb.FILE_STATUS_EMBEDDING and stalled.progress_percent == killed_at.progress_percent

            workers.append(Worker(env, tmp_path / "worker2.log"))
            done = await wait_done(stub, ADMIN, f.id, timeout=120)
            assert done.status == pb.FILE_STATUS_DONE, (done.error.message, workers[1].output())
            assert done.chunk_count == expected

            async with app.resources.db.session() as session:
                rows = await session.scalar(select(func.count()).where(KnowledgeChunkRow.file_id == f.id))
                job = await session.scalar(select(JobRow).where(JobRow.key.contains(f.id)))
                kb_row = await session.get(KnowledgeBaseRow, kb.id)
            vectors = await app.resources.vectors.count(collection_name(kb_row), filter=f'file_id == "{f.id}"')
            assert rows == vectors == expected
            assert job.state == "done" and job.attempts == 2
            hits = (
                await stub.Search(pb.SearchRequest(kb_ids=[kb.id], query="What is the durable answer?"), metadata=ADMIN)
            ).hits
            assert "forty-two" in hits[0].text

            assert workers[1].stop(signal.SIGTERM, timeout=30) == 0  # graceful: drains and exits cleanly
            assert "worker stopped" in workers[1].output()
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
