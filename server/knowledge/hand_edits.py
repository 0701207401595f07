"""Chunks edited or added by hand survive reprocessing their file (a new chunking rule, a re-ingest).

The rule:
- Before the file is parsed again, its hand chunks (`edited`) are set aside and the rest goes: kept as rows,
  moved to negative chunk indexes, which the embedding and keyword passes (over 0..span) skip and no new chunk
  takes. A run that fails later keeps them aside for the next run, so a failure never loses an edit.
- After the new chunks are stored, each edited chunk replaces the character range of the extracted text it came
  from (its offsets, kept through edits): new chunks wholly inside that range go, and the edit takes the place of
  the first of them; new chunks partly inside keep only their text outside it (so an edit's old text never comes
  back, and its neighbours' text is never lost). In a question-answer base (whose pairs have no offsets) an edited
  pair replaces the pair at its own position in the table. An edited chunk with no place so found (no new chunk
  wholly inside its range, or it predates offsets) is put after the new chunks, as are chunks added by hand
  (`added`), in their former order.
- The hand chunks are then embedded and keyword-indexed with the rest. Deleting a chunk is not remembered: a
  reprocess brings back what the parser makes of the file.

Offsets are into the text after the rule's preprocessing; a new rule that normalises whitespace or removes URLs
shifts them a little, so the overlap then places an edit near, not exactly at, its former place.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update

from typecase.server.infra.sql import Database
from typecase.server.knowledge.chunking import count_tokens
from typecase.server.knowledge.models import KnowledgeChunkRow as Chunk
from typecase.server.knowledge.models import chunk_id

ASIDE = 1 << 30  # a hand chunk set aside has chunk_index = its former index - ASIDE (negative, order kept)


async def set_aside(db: Database, file_id: str) -> None:
    """Move the file's hand chunks to negative indexes (in their order), out of the way of the new chunks."""
    async with db.session() as session:
        hand = (
            await session.execute(
                select(Chunk.id, Chunk.chunk_index).where(Chunk.file_id == file_id, Chunk.chunk_index >= 0)
            )
        ).all()
        for row in hand:  # rows already aside (from a run that failed) stay where they are
            index = row.chunk_index - ASIDE
            await session.execute(
                update(Chunk).where(Chunk.id == row.id).values(chunk_index=index, id=chunk_id(file_id, index))
            )


async def reapply(db: Database, file_id: str, span: int, *, by_index: bool) -> tuple[int, int]:
    """Put the hand chunks set aside back among the `span` new chunks (0..span-1); the new span and the file's
    chunk count. `by_index`: match edited chunks to new ones by position (question-answer bases)."""
    async with db.session() as session:
        rows = (
            await session.execute(
                select(Chunk.id, Chunk.start_offset, Chunk.end_offset, Chunk.added, Chunk.chunk_index)
                .where(Chunk.file_id == file_id, Chunk.chunk_index < 0)
                .order_by(Chunk.chunk_index)
            )
        ).all()
        following = span
        # Edited ones first (matched to new chunks), then added ones appended, each group in its former order.
        for row_id, start, end, added, former in sorted(rows, key=lambda r: r[3]):
            target = None
            if not added and by_index and former + ASIDE < span:
                target = former + ASIDE
                await session.execute(
                    delete(Chunk).where(Chunk.file_id == file_id, Chunk.edited.is_(False), Chunk.chunk_index == target)
                )
            elif not added and end > start:
                target = await _cut_out(session, file_id, start, end)
            if target is None:
                target, following = following, following + 1
            await session.execute(
                update(Chunk).where(Chunk.id == row_id).values(chunk_index=target, id=chunk_id(file_id, target))
            )
        count = await session.scalar(select(func.count()).select_from(Chunk).where(Chunk.file_id == file_id))
    return following, int(count or 0)


async def _cut_out(session, file_id: str, start: int, end: int) -> int | None:
    """Remove the range [start, end) of the extracted text from the new chunks: those wholly inside go, those
    partly inside keep the rest. The index of the first chunk that went (a place for the edit), if any."""
    overlapping = (
        await session.execute(
            select(Chunk.id, Chunk.chunk_index, Chunk.text, Chunk.start_offset, Chunk.end_offset)
            .where(
                Chunk.file_id == file_id,
                Chunk.edited.is_(False),
                Chunk.chunk_index >= 0,
                Chunk.start_offset < end,
                Chunk.end_offset > start,
            )
            .order_by(Chunk.chunk_index)
        )
    ).all()
    freed = None
    for c in overlapping:
        before = c.text[: max(0, start - c.start_offset)].rstrip()
        after = c.text[max(0, end - c.start_offset) :].lstrip() if end < c.end_offset else ""
        if not before and not after:
            await session.execute(delete(Chunk).where(Chunk.id == c.id))
            freed = c.chunk_index if freed is None else freed
            continue
        text = "\n".join(p for p in (before, after) if p)
        await session.execute(
            update(Chunk)
            .where(Chunk.id == c.id)
            .values(
                text=text,
                token_count=count_tokens(text),
                start_offset=c.start_offset if before else end,
                end_offset=c.end_offset if after else start,
            )
        )
    return freed
