"""An assistant's instructions as a system prompt: {{name}} placeholders filled from the session's values, the
variables' defaults and the built-ins (current_date, current_time, user_id, assistant_name).

Deliberately not the flow template language: instructions are rendered on every turn, so this is one linear
regex pass (no loops, no expressions, nothing user-supplied evaluated), and an unknown placeholder stays as
written so a typo is visible in the answer rather than silently empty."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]{0,63})\s*\}\}")


def builtins(user_id: str, assistant_name: str, now: datetime | None = None) -> dict[str, str]:
    now = now or datetime.now(UTC)
    return {
        "current_date": now.strftime("%Y-%m-%d"),
        "current_time": now.replace(microsecond=0).isoformat(),
        "user_id": user_id,
        "assistant_name": assistant_name,
    }


def render(template: str, values: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def system_prompt(assistant, session_values: Mapping[str, str], user_id: str) -> str:
    """An Assistant message's instructions rendered: session values for its variables, else their defaults."""
    values = {v.name: v.default_value for v in assistant.variables}
    values.update({k: v for k, v in session_values.items() if k in values})
    values.update(builtins(user_id, assistant.name))
    return render(assistant.instructions, values)
