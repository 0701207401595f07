"""Runs bench/chat/cpu_per_turn.py briefly (SQLite, one round of 20 turns a side) and checks that both servers ran
their own code and answered every turn; the CPU numbers are printed, not asserted (a shared 2-core machine)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_per_turn  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cpu_per_turn_runs_both_sides_and_every_turn_completes():
    results = cpu_per_turn.main(["--mode", "sqlite", "--rounds", "1", "--turns", "20"])
    sqlite = results["sqlite"]
    for side in ("baseline", "current"):
        assert sqlite[side]["turns"] == 20, sqlite[side]["errors"]
        assert sqlite[side]["cpu_s"] > 0
    assert sqlite["ratio"] > 0
