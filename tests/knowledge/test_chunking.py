"""Chunking by Bisheng's rules (separator regexes, before/after, size, overlap), CJK-aware, streamed in windows."""

from __future__ import annotations

import pytest

from typecase.server.knowledge.chunking import Rule, RuleError, Section, Splitter, chunk_sections, count_tokens


def chunks(text: str, **rule) -> list[str]:
    return [c.text for c in chunk_sections([Section(text)], Rule(**rule))]


def test_tokens_are_cjk_aware():
    assert count_tokens("Hello, world!") == 4  # hello , world !
    assert count_tokens("北京是首都") == 5  # one per character
    assert count_tokens("GPT-4模型") == 5  # GPT - 4 模 型


def test_default_separators_prefer_paragraphs_then_lines_then_sentences():
    text = "alpha beta gamma.\n\ndelta epsilon.\nzeta eta theta. iota kappa."
    assert chunks(text, chunk_size=4, chunk_overlap=0) == [
        "alpha beta gamma.",
        "delta epsilon.",
        "zeta eta theta.",
        "iota kappa.",
    ]
    # Everything fits: one chunk, paragraphs kept.
    assert chunks(text, chunk_size=100, chunk_overlap=0) == [text]


def test_chinese_splits_on_full_stop_and_counts_characters():
    text = "第一句话在这里。第二句话也在这里。第三句话结束了。"
    out = chunks(text, chunk_size=9, chunk_overlap=0)
    assert out == ["第一句话在这里。", "第二句话也在这里。", "第三句话结束了。"]
    assert all(count_tokens(c) <= 9 for c in out)


def test_separator_rule_after_keeps_separator_with_previous_piece_and_before_with_next():
    text = "intro text\n## One\nbody one\n## Two\nbody two"
    after = chunks(text, separators=(r"\n## ",), chunk_size=6, chunk_overlap=0)
    before = chunks(text, separators=(r"\n## ",), separator_before=True, chunk_size=6, chunk_overlap=0)
    assert after[0].endswith("##") and after[1].startswith("One")
    assert before == ["intro text", "## One\nbody one", "## Two\nbody two"]


def test_overlap_carries_trailing_pieces_into_the_next_chunk():
    text = " ".join(f"s{i}." for i in range(12))
    out = chunks(text, separators=(r"\. ",), chunk_size=6, chunk_overlap=2)
    # each piece "sN. " is 2 tokens: a chunk holds 3 pieces and the next one repeats its last piece
    assert out[:2] == ["s0. s1. s2.", "s2. s3. s4."]
    assert out[-1] == "s10. s11."
    assert len(out) == 6
    assert chunks(text, separators=(r"\. ",), chunk_size=6, chunk_overlap=0)[:2] == ["s0. s1. s2.", "s3. s4. s5."]


def test_chunk_size_is_a_real_maximum_and_words_are_never_cut():
    text = "word " * 1000 + "汉字" * 300
    out = chunks(text, chunk_size=50, chunk_overlap=5)
    assert all(count_tokens(c) <= 50 for c in out)
    assert all(w in ("word", "") or set(w) <= set("汉字") for c in out for w in c.split(" "))
    assert count_tokens(out[0]) == 50


def test_regex_separators_and_invalid_rules():
    assert chunks("a1b22c333d", separators=(r"\d+",), chunk_size=1, chunk_overlap=0) == ["a1", "b22", "c333", "d"]
    with pytest.raises(RuleError):
        Rule(separators=("(",)).validate()
    with pytest.raises(RuleError):
        Rule(chunk_size=10, chunk_overlap=10).validate()


def test_normalize_whitespace_and_remove_urls():
    text = "see   https://example.com/x?y=1  or mail a.b@example.org\n\n\n\nnext"
    out = chunks(text, chunk_size=100, chunk_overlap=0, normalize_whitespace=True, remove_urls_emails=True)
    assert out == ["see or mail\n\nnext"]


def test_windows_keep_pages_and_match_whole_text_chunking():
    pages = [f"Page {p} paragraph {i}. " + "lorem ipsum dolor sit amet " * 5 for p in range(1, 6) for i in range(20)]
    sections = [Section(text + "\n\n", page=1 + n // 20) for n, text in enumerate(pages)]
    rule = Rule(chunk_size=60, chunk_overlap=10)
    small = list(chunk_sections(sections, rule, window_chars=4096))
    whole = list(chunk_sections(sections, rule, window_chars=10**9))
    assert [c.index for c in small] == list(range(len(small)))
    assert abs(len(small) - len(whole)) <= len(small) // 10
    for c in small:
        first_page = int(c.text.split()[1])
        assert c.page == first_page
    assert {c.page for c in small} == {1, 2, 3, 4, 5}


def test_atomic_sections_are_single_chunks():
    sections = [Section("intro text"), Section("| a | b |\n| 1 | 2 |", atomic=True), Section("outro")]
    out = list(chunk_sections(sections, Rule(chunk_size=2, chunk_overlap=0)))
    assert [c.text for c in out] == ["intro text", "| a | b |\n| 1 | 2 |", "outro"]
    assert [c.index for c in out] == [0, 1, 2]


def test_splitter_spans_point_into_the_text():
    text = "  one.\n\ntwo three.  "
    spans = Splitter(Rule(chunk_size=3, chunk_overlap=0)).split(text)
    assert [text[s:e] for s, e in spans] == ["one.", "two three."]


def test_separators_are_re2_so_a_catastrophic_pattern_is_fast():
    import time

    text = "a" * 30 + "!" + "\n\nnext paragraph"
    started = time.perf_counter()
    assert chunks(text, separators=("(a+)+$", r"\n\n"), chunk_size=3, chunk_overlap=0) == [
        "a" * 30 + "!",
        "next paragraph",
    ]
    assert time.perf_counter() - started < 5  # Python's re: minutes (loose for a loaded CI machine)


@pytest.mark.parametrize(
    "separator, why",
    [
        (r"(?=## )", "lookahead (?=...) is not supported"),
        (r"(?<=。)", "lookbehind (?<=...) is not supported"),
        (r"(\n)\1", "backreferences"),
        ("(?:[ab]{0,40}a){1,20}x", "too complex: 1644 instructions compiled, at most 128"),
    ],
)
def test_an_unusable_separator_is_refused_with_the_reason(separator, why):
    with pytest.raises(RuleError) as caught:
        Rule(separators=(separator,)).validate()
    assert caught.value.field == "separators" and why in caught.value.problem


def test_splitting_a_window_stops_at_its_deadline_with_an_invalid_argument():
    import random
    import time

    import grpc

    from typecase.server.knowledge.chunking import SplitTooSlow

    rng = random.Random(3)
    text = "".join(rng.choice("ab") for _ in range(256_000))
    rule = Rule(separators=("a[ab]{12}b",), chunk_size=50, chunk_overlap=0).validate()
    assert len(Splitter(rule).split(text[:20_000])) > 1  # a usable separator, slow only on a lot of this text
    started = time.perf_counter()
    with pytest.raises(SplitTooSlow) as caught:
        Splitter(rule, window_seconds=0.05).split(text)
    assert time.perf_counter() - started < 0.05 + 0.5
    assert isinstance(caught.value, RuleError) and caught.value.field == "separators"
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.metadata == {"field": "chunking_rule.separators"}
