"""Runs the token-relay benchmark (bench/llm/relay.py) at a small size; `make bench` runs the slow tests."""

from __future__ import annotations

import pytest

from bench.llm import relay


@pytest.mark.slow
def test_relay_benchmark_runs_and_prints_ratios(capsys):
    report = relay.main(["--sequential", "100", "--concurrency", "200", "--requests-each", "1", "--seconds", "5"])
    out = capsys.readouterr().out
    print(out)
    assert "ratio" in out and "LiteLLM" in out
    for surface in relay.SURFACES:
        single, concurrent = report["single"][surface], report["concurrent"][surface]
        assert single.errors == 0 and concurrent.errors == 0, surface
        assert single.tokens == 100 * 50 and concurrent.tokens == 200 * 50, surface  # every token relayed
    for floor in relay.FLOORS:  # the bare framework relays are measured in the 1-stream runs
        assert report["single"][floor].errors == 0 and report["single"][floor].tokens == 100 * 50, floor
    for surface, (result, _cpu) in report["load"].items():
        assert result.errors == 0 and result.requests > 0, surface


@pytest.mark.slow
def test_tool_call_deltas_add_no_more_to_time_to_first_token_than_text(capsys):
    """The brief's bar: the added time to the first tool-call delta within 10% of the added time to first token
    of text, on /openai/v1 and LLMService.generate, with an upstream that paces its tokens like a model."""
    from bench.llm import tools

    report = tools.main(["--rounds", "400"])
    print(capsys.readouterr().out)
    for surface, result in report.items():
        assert result["ratio"] <= 1.10, (surface, result)
