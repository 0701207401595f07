"""Runs the NUL-text check benchmark (bench/rpc/nul_text.py) and prints its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_nul_text_check_cost(capsys):
    spec = importlib.util.spec_from_file_location("nul_text_bench", Path(__file__).with_name("nul_text.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(module.parse(["--rounds", "10"]))
    with capsys.disabled():
        print()
        print(capsys.readouterr().out)
    assert all(r["check_us"] > 0 for r in rows)
    assert rows[-1]["check_us"] < 1000  # bytes are not walked: a 4 MiB chunk costs a handful of field visits
