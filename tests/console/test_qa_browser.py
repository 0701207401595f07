"""The console's QA pairs panel in a real browser against a real server (qa.mjs): a csv import shows its result,
the pairs page and filter, a pair edited and one added by hand are stored as shown, a deleted one is gone, and a
bad table's failing row is shown."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from tests.console.test_browser import AUTH, CHROMIUM, NODE, scenario, start_console_server
from tests.console.test_pages_browser import checked

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or NODE is None,
    reason="the browser tests need Debian's chromium at /usr/bin/chromium and node on PATH",
)

SUBJECTS = ["locker", "parking permit", "laptop", "payslip", "visitor badge", "printer", "desk booking", "mentor",
            "training budget", "coffee machine", "fire drill", "first aid kit", "meeting room", "shuttle bus",
            "lunch voucher", "standing desk", "headset", "pension plan", "gym membership", "vacation days",
            "sick leave", "dress code", "pet policy", "time sheet", "business card"]


def table(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def test_qa_pairs_are_imported_paged_edited_added_and_deleted(server_factory):
    good = table([["question", "answer", "similar questions"]]
                 + [[f"How do I get a {s}?", f"ANSWER-{i:02d}: ask desk {i} about the {s}.", ""]
                    for i, s in enumerate(SUBJECTS)])
    bad = table([["Is it raining?", "Yes."], ["Is it snowing?", ""]])
    server = start_console_server(server_factory)
    result = checked(scenario(
        "qa", server.http_url, GOOD_CSV=good, BAD_CSV=bad, EDIT_KEYWORD="locker",
        EDITED_ANSWER="ANSWER-EDITED: lockers are on the second floor.",
        EDITED_SIMILAR="Where can I store my bag?\nIs there a place for my coat?", DELETE_KEYWORD="printer"))
    with httpx.Client(base_url=server.http_url, headers=AUTH, timeout=30) as http:
        pairs = http.get(f"/v1/knowledge-bases/{result['kbId']}/qa-pairs", params={"page_size": 100}).json()
        kb = http.get(f"/v1/knowledge-bases/{result['kbId']}").json()["knowledge_base"]
    by_id = {p["id"]: p for p in pairs["qa_pairs"]}

    assert kb["kind"] == "KNOWLEDGE_BASE_KIND_QA"
    assert result["imported"] == {"text": "Imported 25 pairs from faq.csv.", "ok": "true"}, result["imported"]
    assert result["totalAfterImport"] == "25 pairs" and result["firstPage"] == 20 and result["allPages"] == 25
    edited = by_id[result["editedId"]]
    assert edited["answer"] == "ANSWER-EDITED: lockers are on the second floor."
    assert edited["similar_questions"] == ["Where can I store my bag?", "Is there a place for my coat?"]
    assert "Where can I store my bag?" in result["shownSimilar"]
    assert result["totalAfterAdd"] == "26 pairs"
    added = [p for p in by_id.values() if p["question"] == "Where is the lost property office?"]
    assert added and added[0]["similar_questions"] == ["I lost my umbrella, where do I look?", "Who keeps found items?"]
    assert result["deletedId"] not in by_id and pairs["total_size"] == 25
    assert result["bad"]["ok"] == "false" and "row 2" in result["bad"]["text"], result["bad"]
