from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import Harness, compile_protos  # noqa: E402


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    return compile_protos(tmp_path_factory.mktemp("gwgen"))


@pytest.fixture(params=["inprocess", "channel"])
async def gw(request, pb):
    async with Harness(pb, request.param) as h:
        yield h
