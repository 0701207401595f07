"""Runs the parse-process overhead benchmark (bench/knowledge/parse_overhead.py) and prints its table."""

from __future__ import annotations

import pytest
from parse_overhead import main


@pytest.mark.slow
async def test_parse_processes_add_little_to_a_small_file(capsys):
    result = await main(["--rounds", "10"])
    with capsys.disabled():
        print()
        print(capsys.readouterr().out)
    # A reused parse process adds a few milliseconds at most to a small file (two pipe hops and JSON).
    assert result["median_added_seconds"] < 0.010, result
