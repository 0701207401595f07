"""Runs the load run (1,000 concurrent SSE chat streams for 60 s against two replicas and a worker) and checks that
no stream failed or was cut short and that the sampled users' answers are all stored whole. Run: make bench."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load_run  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_load_run_1000_streams_loses_nothing():
    report = load_run.main([])
    assert report["typecase"]["turns"] >= 1000
    assert report["typecase"]["failed"] == [] and report["direct"]["failed"] == []
    assert report["stored_ok"] == report["stored_checked"] > 0
