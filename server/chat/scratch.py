"""The per-session scratch index: documents attached in chat that are too large for the prompt are chunked,
embedded and kept beside the session, and each later question of the session (the one they came with included)
gets their most relevant chunks in its prompt, cited by the attachment's name.

Why rows in SQL searched exactly with numpy rather than a hidden vector collection: a session holds at most
chat_scratch_max_chunks chunks (thousands), which numpy scores in milliseconds; the rows live and die with the
session in the chat domain's own database (no other store to keep in step, no cross-domain call to clean up), and
every replica sees them. Ranking fuses cosine similarity with BM25 keyword scores by reciprocal rank, like the
knowledge bases' hybrid search, because a small English embedding model alone misses exact facts (codes, names)
that keywords find.

Rules:
- A document goes in the prompt when its whole text fits (at most chat_attachment_max_chars, and within the room
  the model's context leaves); otherwise it is indexed here, up to chat_scratch_max_chars characters of text
  (more: INVALID_ARGUMENT naming the file) and chat_scratch_max_chunks chunks per session (likewise).
- Chunks are cut by the knowledge chunker (through the DocumentReader port) at chat_scratch_chunk_tokens, which
  fits the default embedding model's window, and written before the turn starts (limits checked, so the RPC fails
  early and at once); they are embedded with the default knowledge-embedding model (through the Embedding port) in
  the turn's retrieval step, since a large document takes tens of seconds (1,001 chunks: 42 s on the 2-core dev
  machine) that the Chat call should not wait for. The step, streamed as running, is streamed again after each
  batch of chat_scratch_embed_batch chunks with outputs.progress ("256/1001 chunks embedded"), so the wait shows.
  A turn that stops midway leaves the rest for the next one.
  With no default embedding model the document is cut into the prompt as before.
- Rows go when the session is deleted or the question message that brought them is deleted; a copied session
  gets its own copy of the rows of the messages copied.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Callable

import numpy as np
from sqlalchemy import bindparam, delete, exists, func, select, update

from typecase.server.chat import context as ctx
from typecase.server.chat.attachments import DocumentReader, ForModel
from typecase.server.chat.models import ChatScratchChunkRow as Row
from typecase.server.chat.models import ChatSessionRow
from typecase.server.chat.turn_state import Turn, now_stamp
from typecase.server.infra.sql import Database, new_id, transient
from typecase.server.rpc.errors import TypecaseError, invalid_argument
from typecase.server.rpc.ports import Embedding
from typecase.v1 import chat_pb2, common_pb2, flow_pb2, llm_pb2

Emit = Callable[..., None]  # Turns._emit(turn, event, terminal=False)
NOTE_CHARS = 200  # what a document's header or note takes in the prompt, kept free when deciding what fits
RRF_K = 60
PENDING = b""  # a chunk not embedded yet: the next turn of the session embeds it (see retrieve)
_WORD_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W_]+")
# Built once: every turn start runs it, and building the statement cost more than executing it.
SESSION_WITH_FLAG = select(
    ChatSessionRow.__table__, exists().where(Row.session_id == ChatSessionRow.id).label("has_scratch_rows")
).where(ChatSessionRow.id == bindparam("session_id"))


class Scratch:
    def __init__(self, db: Database, embedder: Embedding, reader: DocumentReader, settings):
        self.db = db
        self.embedder = embedder
        self.reader = reader
        self.settings = settings

    @property
    def read_chars(self) -> int:
        """How much of an attached document to read: enough to index it whole."""
        return max(self.settings.chat_attachment_max_chars, self.settings.chat_scratch_max_chars)

    # -- indexing (before the turn starts) ----------------------------------------------------------------------
    async def take(self, attached: ForModel, question: str, room: int, session_id: str) -> list[str]:
        """Move the documents of `attached` that do not fit `room` characters (with the question) into the
        session's scratch index; the ids of the rows written (message_id "" until `assign`)."""
        limit = self.settings.chat_attachment_max_chars
        left = room - len(question)
        keep: list[tuple[str, str, bool]] = []
        move: list[tuple[str, str, bool]] = []
        for name, text, cut in attached.documents:
            if not cut and len(text) <= limit and len(text) + NOTE_CHARS <= left:
                keep.append((name, text, cut))
                left -= len(text) + NOTE_CHARS
            else:
                move.append((name, text, cut))
        if not move:
            return []
        for name, text, cut in move:
            if cut or len(text) > self.settings.chat_scratch_max_chars:
                raise invalid_argument(
                    "attachments",
                    f"{name!r} has more than {self.settings.chat_scratch_max_chars} characters of text, the most "
                    "a document attached in chat may have (chat_scratch_max_chars)",
                )
        model_id = await self.embedder.default_model_id("knowledge_embedding")
        chunks = [
            (name, seq, piece)
            for name, text, _ in move
            for seq, piece in enumerate(await self.reader.chunk_text(text, self.settings.chat_scratch_chunk_tokens))
        ]
        async with self.db.session() as session:
            held = await session.scalar(select(func.count()).select_from(Row).where(Row.session_id == session_id))
        if (held or 0) + len(chunks) > self.settings.chat_scratch_max_chunks:
            raise invalid_argument(
                "attachments",
                f"{', '.join(repr(m[0]) for m in move)} would make {len(chunks)} chunks in this session's scratch "
                f"index, which holds {held} of at most {self.settings.chat_scratch_max_chunks} "
                "(chat_scratch_max_chunks): attach a smaller document or start a new session",
            )
        if not model_id or not chunks:  # no embedding model: cut into the prompt, as without a scratch index
            attached.documents = [(n, t[:limit], c or len(t) > limit) for n, t, c in attached.documents]
            return []
        rows = [
            Row(
                id=new_id(),
                session_id=session_id,
                message_id="",
                name=name[:255],
                seq=seq,
                text=text,
                model_id=model_id,
                vector=PENDING,
            )
            for name, seq, text in chunks
        ]
        ids = [row.id for row in rows]
        async with self.db.session() as session:
            session.add_all(rows)
        attached.documents = keep
        attached.indexed = [name for name, _, _ in move]
        return ids

    @staticmethod
    def session_of(found) -> tuple[ChatSessionRow | None, bool]:
        """The chat session's row (None: no such row) and whether the session has scratch rows, from a row of
        SESSION_WITH_FLAG: a turn start learns it at no cost, and a session without any (the common case) costs its
        turn no lookup of its own. The row is read as plain columns and made a transient instance (an ORM load cost
        more than the statement): read it, never add it to a session."""
        if found is None:
            return None, False
        values = found._asdict()
        flag = values.pop("has_scratch_rows")
        return transient(ChatSessionRow, values), bool(flag)

    async def assign(self, ids: list[str], message_id: str) -> None:
        """Tie freshly written rows to the question message that brought them (deleted with it)."""
        if ids:
            async with self.db.session() as session:
                await session.execute(update(Row).where(Row.id.in_(ids)).values(message_id=message_id))

    async def drop(self, ids: list[str]) -> None:
        if ids:
            async with self.db.session() as session:
                await session.execute(delete(Row).where(Row.id.in_(ids)))

    async def remove(self, *, session_id: str = "", message_id: str = "") -> None:
        """Drop a deleted session's rows, or a deleted question message's."""
        where = Row.session_id == session_id if session_id else Row.message_id == message_id
        async with self.db.session() as session:
            await session.execute(delete(Row).where(where))

    async def copy(self, source_id: str, copy_id: str, message_ids: dict[str, str]) -> None:
        """A copied session's index: the rows of the messages copied (old message id -> new)."""
        async with self.db.session() as session:
            rows = (await session.scalars(select(Row).where(Row.session_id == source_id))).all()
            session.add_all(
                Row(
                    id=new_id(),
                    session_id=copy_id,
                    message_id=message_ids[r.message_id],
                    name=r.name,
                    seq=r.seq,
                    text=r.text,
                    model_id=r.model_id,
                    vector=r.vector,
                    create_time=r.create_time,
                )
                for r in rows
                if r.message_id in message_ids
            )

    # -- retrieval (in the turn) --------------------------------------------------------------------------------
    async def retrieve(self, turn: Turn, emit: Emit) -> bool:
        """Put the scratch chunks most relevant to the question in the prompt, as a step with citations. True
        when the prompt changed."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(Row.id, Row.name, Row.text, Row.model_id, Row.vector)
                    .where(Row.session_id == turn.session_id)
                    .order_by(Row.create_time.desc(), Row.seq)
                )
            ).all()
        if not rows:
            return False
        node = flow_pb2.NodeRun(
            node_id="attachment_retrieval",
            node_type=flow_pb2.NODE_TYPE_KNOWLEDGE_RETRIEVAL,
            node_name="Attachment retrieval",
            status=flow_pb2.NODE_RUN_STATUS_RUNNING,
            start_time=now_stamp(),
            attempt=1,
        )
        model_id = rows[0].model_id
        rows = [r for r in rows if r.model_id == model_id]  # vectors of one model (the default may change)
        pending = [r for r in rows if r.vector == PENDING]
        node.inputs.update({"query": turn.question, "chunks": len(rows), "embedded_now": len(pending)})
        emit(turn, chat_pb2.TurnEvent(node=chat_pb2.NodeEvent(node=node)))
        changed = False

        def progress(embedded: int) -> None:
            node.outputs["progress"] = f"{embedded}/{len(pending)} chunks embedded"
            emit(turn, chat_pb2.TurnEvent(node=chat_pb2.NodeEvent(node=node)))

        try:
            fresh = await self._embed_pending(pending, model_id, progress)
            [query] = await self.embedder.embed_texts([turn.question], model_id)
        except TypecaseError as exc:  # answer without the passages rather than not at all
            node.status, node.error = flow_pb2.NODE_RUN_STATUS_FAILED, exc.to_status()
        else:
            node.status = flow_pb2.NODE_RUN_STATUS_SUCCEEDED
            top = await asyncio.to_thread(
                rank,
                [r.text for r in rows],
                [fresh.get(r.id, r.vector) for r in rows],
                query,
                turn.question,
                self.settings.chat_scratch_top_k,
            )
            found = [
                common_pb2.Citation(file_name=rows[i].name, chunk_id=rows[i].id, text=rows[i].text, score=score)
                for i, score in top
            ]
            if found:
                emit(turn, chat_pb2.TurnEvent(citation=chat_pb2.CitationEvent(citations=found)))
                changed = self._to_prompt(turn, found, first=len(turn.citations) + 1)
                turn.citations = [*turn.citations, *found]
        node.end_time.GetCurrentTime()
        turn.steps.append(chat_pb2.NodeEvent(node=node))
        emit(turn, chat_pb2.TurnEvent(node=chat_pb2.NodeEvent(node=node)))
        return changed

    async def _embed_pending(self, pending: list, model_id: str, progress: Callable[[int], None]) -> dict[str, bytes]:
        """Embed the chunks written by `take` in this turn (or left by a turn that stopped): id -> vector."""
        done: dict[str, bytes] = {}
        batch = self.settings.chat_scratch_embed_batch
        for start in range(0, len(pending), batch):
            group = pending[start : start + batch]
            vectors = await self.embedder.embed_texts([r.text for r in group], model_id)
            values = {r.id: np.asarray(v, dtype=np.float32).tobytes() for r, v in zip(group, vectors, strict=True)}
            async with self.db.session() as session:
                await session.execute(update(Row), [{"id": i, "vector": v} for i, v in values.items()])
            done.update(values)
            progress(len(done))
        return done

    def _to_prompt(self, turn: Turn, found: list[common_pb2.Citation], first: int) -> bool:
        per_token = self.settings.chat_chars_per_token
        room = turn.budget.budget_tokens - turn.budget.used_tokens - ctx.MESSAGE_OVERHEAD_TOKENS
        passages = []
        for i, citation in enumerate(found, first):
            text = f'[{i}] attached file "{citation.file_name}": {citation.text}'
            cost = ctx.estimate_tokens(text, per_token) + 1
            if cost > room:
                break
            passages.append(text)
            room -= cost
        if not passages:
            return False
        content = (
            "Passages of the files attached in this conversation, relevant to the question; answer using them "
            "where relevant, citing them as [n]:\n\n" + "\n\n".join(passages)
        )
        turn.request.messages.insert(
            len(turn.request.messages) - 1, llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_SYSTEM, content=content)
        )
        turn.budget.used_tokens += ctx.estimate_tokens(content, per_token)
        return True


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def rank(texts: list[str], vectors: list[bytes], query: list[float], question: str, k: int) -> list[tuple[int, float]]:
    """The `k` best chunks as (index, fused score): cosine and BM25 rankings fused by reciprocal rank."""
    matrix = np.stack([np.frombuffer(v, dtype=np.float32) for v in vectors])
    q = np.asarray(query, dtype=np.float32)
    cosine = matrix @ q / (np.linalg.norm(matrix, axis=1) * (np.linalg.norm(q) or 1.0) + 1e-12)
    fused = np.zeros(len(texts))
    fused[np.argsort(-cosine, kind="stable")] += 1.0 / (RRF_K + np.arange(1, len(texts) + 1))
    keyword = bm25(texts, words(question))
    hits = np.flatnonzero(keyword > 0)
    if hits.size:
        order = hits[np.argsort(-keyword[hits], kind="stable")]
        fused[order] += 1.0 / (RRF_K + np.arange(1, order.size + 1))
    best = np.argsort(-fused, kind="stable")[:k]
    return [(int(i), float(fused[i])) for i in best]


def bm25(texts: list[str], terms: list[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    scores = np.zeros(len(texts))
    terms = list(dict.fromkeys(terms))
    if not terms or not texts:
        return scores
    counts = [Counter(words(t)) for t in texts]
    lengths = np.array([sum(c.values()) for c in counts], dtype=float)
    average = lengths.mean() or 1.0
    for term in terms:
        tf = np.array([c.get(term, 0) for c in counts], dtype=float)
        df = int((tf > 0).sum())
        if not df:
            continue
        idf = math.log(1 + (len(texts) - df + 0.5) / (df + 0.5))
        scores += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / average))
    return scores
