"""Runs the flow engine overhead benchmark (bench/flow/overhead.py) and prints its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
async def test_flow_engine_overhead(capsys):
    spec = importlib.util.spec_from_file_location("flow_overhead", Path(__file__).with_name("overhead.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = await module.main(module.parse(["--nodes", "50", "--runs", "10"]))
    with capsys.disabled():
        print()
        print(capsys.readouterr().out)
    assert result["plain_us_per_node"] > 0 and result["ratio"] > 1
    assert result["engine_us_per_node"] < 50_000  # a durable step stays in the low milliseconds
