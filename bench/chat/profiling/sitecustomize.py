"""Loaded by a `typecase serve` started with this folder on PYTHONPATH (bench/chat/profile_turns.py): SIGUSR1
starts cProfile on the event loop's thread and zeroes the SQL statement counts, SIGUSR2 writes the profile to
$TC_PROFILE_OUT and the statements executed since SIGUSR1 (per SQL text) to $TC_PROFILE_OUT.sql.json."""

import collections
import cProfile
import json
import os
import signal

_OUT = os.environ.get("TC_PROFILE_OUT")
if _OUT:
    _state: dict = {"prof": None, "sql": collections.Counter()}

    def _count(conn, cursor, statement, parameters, context, executemany):
        _state["sql"][("many " if executemany else "") + " ".join(statement.split())[:160]] += 1

    def _listen() -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", _count)

    def _start(*_):
        _state["sql"].clear()
        _state["prof"] = cProfile.Profile()
        _state["prof"].enable()

    def _stop(*_):
        prof = _state["prof"]
        if prof is not None:
            prof.disable()
            prof.dump_stats(_OUT)
        with open(_OUT + ".sql.json", "w") as f:
            json.dump(_state["sql"].most_common(), f, indent=1)

    _listen()
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
