"""Tool names as declared to a model: what a model accepts, unique within one request."""

from __future__ import annotations

from typecase.server.tools.api import declared_name


def test_declared_names_are_model_safe_and_unique():
    taken: set[str] = set()
    names = []
    for raw in ("get.pet", "get.pet", "x" * 80, "***"):
        names.append(declared_name(raw, taken))
        taken.add(names[-1])
    assert names[:2] == ["get_pet", "get_pet_2"] and len(names[2]) == 64 and names[3] == "tool"
