"""Loaded by a `typecase serve` started with this folder on PYTHONPATH (bench/chat/profile_turns.py): SIGUSR1
starts profiling the event loop's thread and zeroes the SQL statement counts, SIGUSR2 writes the profile to
$TC_PROFILE_OUT and the statements executed since SIGUSR1 (per SQL text) to $TC_PROFILE_OUT.sql.json.

The profile is cProfile's (exact calls, inflated by its per-call cost), or with TC_PROFILE_SAMPLE=1 a sampler on
the process's CPU clock (ITIMER_PROF, every millisecond of CPU: the main thread's stack), written as JSON
{"self": {function: samples}, "inclusive": {function: samples}, "total": samples}."""

import collections
import cProfile
import json
import os
import signal
import sys
import time

_OUT = os.environ.get("TC_PROFILE_OUT")
if _OUT:
    _SAMPLE = os.environ.get("TC_PROFILE_SAMPLE") == "1"
    _state: dict = {
        "prof": None,
        "sql": collections.Counter(),
        "self": collections.Counter(),
        "incl": collections.Counter(),
        "n": 0,
    }

    def _count(conn, cursor, statement, parameters, context, executemany):
        text = " ".join(statement.split())
        _state["sql"][
            ("many " if executemany else "") + (text if len(text) < 200 else f"{text[:110]} … {text[-80:]}")
        ] += 1

    def _listen() -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", _count)
        try:  # reads that go together run outside SQLAlchemy's execution (Database.read_together)
            from typecase.server.infra import compiled_select
        except ImportError:
            return
        parameters = compiled_select.CompiledSelect.parameters

        def counted(self, values):  # once per statement run, on SQLite's reader and on asyncpg
            _count(None, None, self.sql, None, None, False)
            return parameters(self, values)

        compiled_select.CompiledSelect.parameters = counted

    def _name(code) -> str:
        file = code.co_filename
        for cut in ("site-packages/", "turncpu/", "python3.11/"):
            if cut in file:
                file = file.split(cut, 1)[1]
                break
        return f"{file}:{code.co_name}"

    def _sample(_sig, frame):
        _state["n"] += 1
        if frame is None:
            return
        _state["self"][_name(frame.f_code)] += 1
        seen = set()
        while frame is not None:
            name = _name(frame.f_code)
            if name not in seen:
                seen.add(name)
                _state["incl"][name] += 1
            frame = frame.f_back

    def _start(*_):
        _state["sql"].clear()
        if _SAMPLE:
            _state["self"].clear()
            _state["incl"].clear()
            _state["n"] = 0
            signal.signal(signal.SIGPROF, _sample)
            signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
        else:
            _state["prof"] = cProfile.Profile(time.thread_time)  # CPU, not wall time (the VM is shared)
            _state["prof"].enable()

    def _stop(*_):
        if _SAMPLE:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            with open(_OUT, "w") as f:
                json.dump({"self": _state["self"], "inclusive": _state["incl"], "total": _state["n"]}, f)
        elif _state["prof"] is not None:
            _state["prof"].disable()
            _state["prof"].dump_stats(_OUT)
        with open(_OUT + ".sql.json", "w") as f:
            json.dump(_state["sql"].most_common(), f, indent=1)

    _listen()
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    del sys
