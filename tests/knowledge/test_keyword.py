"""BM25 keyword ranking: jieba terms for Chinese, words for English, IDF and length normalisation."""

from __future__ import annotations

import math

from typecase.server.knowledge import keyword


def index(docs: dict[str, list[str]]):
    """{file_id: [chunk texts]} -> postings over the whole corpus, N, avgdl."""
    postings: dict[str, list] = {}
    n, total = 0, 0
    for file_id, texts in docs.items():
        builder = keyword.PostingsBuilder()
        for i, text in enumerate(texts):
            total += builder.add(i, text)
            n += 1
        for term, blob in builder.rows():
            postings.setdefault(term, []).append((file_id, keyword.decode(blob)))
    return postings, n, total / n


def search(docs, query, allowed=None, limit=10):
    postings, n, avg = index(docs)
    return keyword.score(keyword.tokenize(query), postings, n, avg, allowed, limit)


def test_tokenize_mixes_jieba_and_words():
    terms = keyword.tokenize("北京大学的Machine-Learning课程，GPT-4 模型！")
    assert "北京" in terms and "大学" in terms and "北京大学" in terms
    assert {"machine", "learning", "gpt", "4", "课程", "模型"} <= set(terms)
    assert "的" not in terms and "the" not in keyword.tokenize("the cat")


def test_planted_answer_ranks_first_and_scores_match_bm25():
    docs = {
        "f1": ["the cat sat on the mat", "dogs and cats are pets", "a treatise on zebra migration patterns"],
        "f2": ["cats cats cats everywhere", "nothing relevant here at all"],
    }
    hits = search(docs, "zebra migration")
    assert (hits[0].file_id, hits[0].chunk_index) == ("f1", 2)
    # Okapi BM25 (k1=1.2, b=0.75, Lucene idf) computed by hand for the top hit.
    n, avg = 5, (3 + 3 + 4 + 4 + 4) / 5  # stopwords (the, on, a, and, are, at) are not terms
    dl = 4  # treatise zebra migration patterns
    expected = sum(
        math.log(1 + (n - 1 + 0.5) / (1 + 0.5)) * 2.2 / (1 + 1.2 * (0.25 + 0.75 * dl / avg)) for _ in range(2)
    )
    assert abs(hits[0].score - expected) < 1e-9
    assert 0 < hits[0].normalized <= 1


def test_rare_terms_outweigh_common_ones_and_length_normalises():
    docs = {"f": ["apple banana", "apple cherry", "apple banana kiwi", "apple"]}
    hits = search(docs, "apple kiwi")
    assert hits[0].chunk_index == 2
    short_long = search({"f": ["kiwi", "kiwi " + "filler " * 30]}, "kiwi")
    assert short_long[0].chunk_index == 0


def test_chinese_query_matches_chinese_chunk():
    docs = {"zh": ["珠穆朗玛峰的高度是八千八百四十八米。", "长江是中国最长的河流。", "今天天气很好，适合散步。"]}
    hits = search(docs, "珠穆朗玛峰有多高")
    assert hits[0].chunk_index == 0
    assert search(docs, "中国最长的河流")[0].chunk_index == 1


def test_allowed_files_restrict_ranking_but_not_statistics():
    docs = {"a": ["kiwi fruit"], "b": ["kiwi kiwi fruit"]}
    all_hits = search(docs, "kiwi")
    only_a = search(docs, "kiwi", allowed={"a"})
    assert [h.file_id for h in only_a] == ["a"]
    assert abs(only_a[0].score - next(h.score for h in all_hits if h.file_id == "a")) < 1e-12
