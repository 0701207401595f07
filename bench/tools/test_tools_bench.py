"""Runs the tools bench (CallTool through Typecase beside the same MCP server and OpenAPI service called directly;
ListTools of 1,000 tools). Every call's answer is checked inside the bench; here, that it ran them all. Run: make
bench."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_tools  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tools_bench_answers_every_call_and_lists_1000_tools():
    result = asyncio.run(bench_tools.main(100, 10))
    assert result["calls"] == 200
    assert result["list_1000"] > 0
    assert result["floor"] > 0 and result["get_tool"] > 0  # the breakdown was measured, beside the calls
