"""Runs the chat bench (500 concurrent streaming turns through one `typecase serve`, beside the same load sent
straight to the upstream) and checks that every turn completed with its exact stored answer. Run: make bench."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_chat  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chat_bench_500_concurrent_turns(capsys):
    report = bench_chat.main([])
    with capsys.disabled():
        print()  # the report printed by main() stays visible with -s; here is the verdict
    assert report["direct"]["complete"] == 500
    assert report["typecase"]["complete"] == 500, report["typecase"]["errors"]
    assert report["stored_ok"] == report["stored_checked"] > 0
    assert report["typecase"]["tokens"] == report["direct"]["tokens"] == 500 * 50
