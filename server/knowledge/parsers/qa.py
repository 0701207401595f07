"""Question-answer tables (csv, xlsx) for question-answer knowledge bases: one pair a row.

Columns are found by their header (question / answer / similar questions, in English or Chinese, as RAGFlow's and
Bisheng's QA templates name them); a table without such a header is read by position: question, answer, then any
number of similar-question columns. A cell of similar questions may hold several, one a line. Each pair travels
out of the parse child as one atomic Section whose text is JSON ({"q", "a", "s"}); ingest.py stores the questions
as the chunk text (what is embedded and keyword-indexed) and the answer beside it. A row with a question but no
answer (or the reverse) fails the file naming the row, so an import never half-succeeds silently.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence

from typecase.server.knowledge.chunking import Section

from . import LimitExceeded, Options, ParseError

QUESTION_NAMES = {"question", "questions", "q", "query", "问题", "标准问题", "问"}
ANSWER_NAMES = {"answer", "answers", "a", "reply", "答案", "回答", "答"}
SIMILAR_MARKS = ("similar", "相似", "alias", "variant", "paraphrase")


def cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value).strip()


def _header(row: list[str]) -> tuple[int, int, list[int]] | None:
    names = [c.strip().lower().rstrip(":：") for c in row]
    question = next((i for i, n in enumerate(names) if n in QUESTION_NAMES), None)
    answer = next((i for i, n in enumerate(names) if n in ANSWER_NAMES), None)
    if question is None or answer is None:
        return None
    similar = [i for i, n in enumerate(names) if any(m in n for m in SIMILAR_MARKS) and i not in (question, answer)]
    return question, answer, similar


def _limit(text: str, limit: int, what: str, setting: str, where: str) -> str:
    if len(text) > limit:
        raise LimitExceeded(f"{where}: the {what} has more than {limit} characters ({setting})", setting, limit)
    return text


def qa_sections(
    rows: Iterable[Sequence[object]], options: Options, sheet: str = "", start_count: int = 0
) -> Iterator[Section]:
    """One Section per pair; `start_count` pairs were produced before (earlier sheets), for the pair limit."""
    columns: tuple[int, int, list[int]] | None = None
    positional = False
    count = start_count
    for number, raw in enumerate(rows, 1):
        row = [cell_text(c) for c in raw]
        if not any(row):
            continue
        where = f"{sheet + ' ' if sheet else ''}row {number}"
        if columns is None:
            columns = _header(row)
            if columns is not None:
                continue
            columns, positional = (0, 1, []), True
        qi, ai, si = columns
        if positional:  # without a header, every column after the answer holds similar questions
            si = list(range(2, len(row)))
        question = row[qi] if qi < len(row) else ""
        answer = row[ai] if ai < len(row) else ""
        if not question or not answer:
            raise ParseError(f"{where}: a pair needs both a question and an answer")
        similar: list[str] = []
        for i in si:
            if i < len(row):
                similar.extend(s.strip() for s in row[i].splitlines() if s.strip() and s.strip() not in similar)
        if len(similar) > options.qa_max_similar_questions:
            raise LimitExceeded(
                f"{where}: more than {options.qa_max_similar_questions} similar questions "
                "(knowledge_qa_max_similar_questions)",
                "knowledge_qa_max_similar_questions",
                options.qa_max_similar_questions,
            )
        for q in [question, *similar]:
            _limit(q, options.qa_question_max_chars, "question", "knowledge_qa_question_max_chars", where)
        _limit(answer, options.qa_answer_max_chars, "answer", "knowledge_qa_answer_max_chars", where)
        count += 1
        if count > options.qa_max_pairs:
            raise LimitExceeded(
                f"the table has more than {options.qa_max_pairs} pairs (knowledge_qa_max_pairs)",
                "knowledge_qa_max_pairs",
                options.qa_max_pairs,
            )
        yield Section(json.dumps({"q": question, "s": similar, "a": answer}, ensure_ascii=False), atomic=True)


def decode(section_text: str) -> tuple[str, list[str], str]:
    """(question, similar questions, answer) of a Section made by qa_sections."""
    data = json.loads(section_text)
    return data["q"], list(data.get("s") or []), data["a"]
