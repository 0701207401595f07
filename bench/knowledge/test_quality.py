"""The quality benchmark's own parts: its metrics on rankings worked by hand, and its labels (every Chinese needle
is in the seed documents; every English question labels a non-empty answer that the document's text holds)."""

from __future__ import annotations

import math

import pytest
import quality


def test_metrics_on_rankings_worked_by_hand():
    assert quality.metrics(["a", "b", "c"], {"a"}) == (1.0, 1.0, 1.0)
    recall, mrr, ndcg = quality.metrics(["x", "a", "y", "z", "w", "b"], {"a", "b"})
    assert recall == 0.5 and mrr == 0.5
    assert ndcg == pytest.approx((1 / math.log2(3) + 1 / math.log2(7)) / (1 + 1 / math.log2(3)))
    assert quality.metrics(["x"] * 10, {"a"}) == (0.0, 0.0, 0.0)
    assert quality.metrics([], set()) == (0.0, 0.0, 0.0)


@pytest.mark.skipif(not quality.SEEDS.exists(), reason="no seed documents")
def test_every_chinese_question_labels_a_passage():
    docs = quality.chinese_corpus()
    for question, needle in quality.ZH_QUERIES:
        spans = [(d, s) for d in docs for s in d.spans.get(question, [])]
        assert spans and all(d.text[a:b] == needle for d, (a, b) in spans)


@pytest.mark.skipif(not quality.FAQ_DIR.exists(), reason="python3-doc is not installed")
def test_english_questions_label_their_answers_and_the_text_holds_no_question():
    docs = quality.english_corpus()
    questions = {q for d in docs for q in d.spans}
    assert len(questions) + len(quality.ZH_QUERIES) >= 100
    quoted = 0
    for d in docs:
        for question, spans in d.spans.items():
            assert question.endswith("?") and all(b - a >= 40 for a, b in spans)
            quoted += question in d.text  # an answer may cite another question; the headings are gone
    assert quoted <= len(questions) // 20
