"""Runs the event log bench (durable embedded event logs against in-memory ones, alternating rounds of chat turns)
and checks that every turn of both completed. Run: make bench."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_eventlog  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_durable_embedded_event_logs_against_memory():
    report = bench_eventlog.main(["--turns", "50", "--rounds", "4"])
    assert report["memory"]["complete"] == report["durable"]["complete"] == 200, report
    assert report["journal_bytes"] > 0
