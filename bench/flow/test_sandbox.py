"""Runs the code sandbox benchmark (bench/flow/sandbox.py) and prints its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
async def test_code_sandbox_cost(capsys):
    spec = importlib.util.spec_from_file_location("flow_sandbox", Path(__file__).with_name("sandbox.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = await module.main(module.parse(["--runs", "30"]))
    with capsys.disabled():
        print()
        print(capsys.readouterr().out)
    assert result["plain_ms"] > 0 and result["sandbox_ms"] > 0
    assert result["sandbox_ms"] < 1000  # a sandboxed run stays well under a second
