"""Keyword index: Okapi BM25 over terms from jieba (Chinese) and a word regex (everything else).

Storage is an inverted index in SQL (see models.KnowledgeTermRow): per file, per block of chunks, per term one row
whose `postings` packs (chunk_index, tf, doc_len) int32 triples. Corpus statistics (N, average length) come from
the files' counters, so the index is exact, incremental (add/delete one file), shared by every replica, and needs
no rebuild. Scoring is vectorised with numpy.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("typecase.knowledge.keyword")

K1 = 1.2
B = 0.75
MAX_TERM_CHARS = 64

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_SEGMENT_RE = re.compile(rf"[{_CJK}]+|[^{_CJK}]+")
_CJK_RUN_RE = re.compile(rf"[{_CJK}]")
_WORD_RE = re.compile(r"[^\W_]+")

STOPWORDS = frozenset(
    """a an and are as at be but by for from has have he her his i if in into is it its of on or our she so such
    that the their them then there these they this to was we were which will with you your
    的 了 是 在 和 与 及 或 也 就 都 而 之 其 这 那 我 你 他 她 它 们 着 把 被 从 对 为 以 于 等 个 吗 呢 吧 啊""".split()
)

_jieba_lock = threading.Lock()
_jieba = None


def _tokenizer():
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _jieba = tokenizer
    return _jieba


def tokenize(text: str) -> list[str]:
    """Index/query terms: NFKC-normalised, lowercased; Chinese cut by jieba (search mode), other scripts by words."""
    text = unicodedata.normalize("NFKC", text).lower()
    terms: list[str] = []
    for m in _SEGMENT_RE.finditer(text):
        run = m.group()
        if _CJK_RUN_RE.match(run):
            words = _tokenizer().cut_for_search(run, HMM=True)
            terms.extend(w for w in words if w.strip() and w not in STOPWORDS)
        else:
            terms.extend(w for w in _WORD_RE.findall(run) if w not in STOPWORDS and len(w) <= MAX_TERM_CHARS)
    return terms


def warm_up() -> None:
    """Load jieba's dictionary now (about a second) rather than on the first document."""
    _tokenizer()


class PostingsBuilder:
    """Accumulates the postings of one block of chunks of one file."""

    def __init__(self) -> None:
        self.postings: dict[str, list[int]] = {}

    def add(self, chunk_index: int, text: str) -> int:
        """Adds one chunk; returns its length in terms (BM25's document length)."""
        terms = tokenize(text)
        dl = len(terms)
        for term, tf in Counter(terms).items():
            self.postings.setdefault(term, []).extend((chunk_index, tf, dl))
        return dl

    def rows(self) -> Iterable[tuple[str, bytes]]:
        for term, values in self.postings.items():
            yield term, np.asarray(values, dtype="<i4").tobytes()

    def __len__(self) -> int:
        return len(self.postings)


def decode(blob: bytes) -> np.ndarray:
    """(n, 3) int32 array of (chunk_index, tf, doc_len)."""
    return np.frombuffer(blob, dtype="<i4").reshape(-1, 3)


@dataclass
class KeywordHit:
    file_id: str
    chunk_index: int
    score: float  # raw BM25
    normalized: float  # 0-1: score / the most any document could score for this query


def idf(n_docs: int, df: int) -> float:
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def score(
    query_terms: list[str],
    postings: dict[str, list[tuple[str, np.ndarray]]],
    n_docs: int,
    avg_len: float,
    allowed_files: set[str] | None,
    limit: int,
) -> list[KeywordHit]:
    """Top `limit` chunks by BM25. `postings[term]` lists (file_id, triples) over the whole corpus (so df is exact);
    only files in `allowed_files` (None = all) are ranked."""
    if not query_terms or n_docs <= 0 or limit <= 0:
        return []
    avg_len = avg_len or 1.0
    counts = Counter(query_terms)
    file_ids: list[str] = []
    file_pos: dict[str, int] = {}
    keys, contribs = [], []
    best = 0.0
    for term, qtf in counts.items():
        lists = postings.get(term) or []
        df = sum(len(arr) for _, arr in lists)
        if df == 0:
            continue
        w = idf(n_docs, df) * qtf
        best += w * (K1 + 1)
        for file_id, arr in lists:
            if allowed_files is not None and file_id not in allowed_files:
                continue
            pos = file_pos.get(file_id)
            if pos is None:
                pos = file_pos[file_id] = len(file_ids)
                file_ids.append(file_id)
            tf = arr[:, 1].astype(np.float64)
            dl = arr[:, 2].astype(np.float64)
            contribs.append(w * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avg_len)))
            keys.append((np.int64(pos) << 32) | arr[:, 0].astype(np.int64))
    if not keys:
        return []
    all_keys = np.concatenate(keys)
    uniq, inverse = np.unique(all_keys, return_inverse=True)
    totals = np.bincount(inverse, weights=np.concatenate(contribs))
    k = min(limit, len(totals))
    top = np.argpartition(-totals, k - 1)[:k]
    top = top[np.argsort(-totals[top], kind="stable")]
    hits = []
    for i in top:
        key = int(uniq[i])
        hits.append(
            KeywordHit(
                file_ids[key >> 32], key & 0xFFFFFFFF, float(totals[i]), float(totals[i] / best) if best > 0 else 0.0
            )
        )
    return hits
