"""Generate typecase/client/_sync.py (the blocking `Client`) from _aio.py (`AsyncClient`), so that the two clients
are written once and cannot drift: by hand they had drifted within weeks (27 duplicated runs, docstrings on one side
only, a WatchFile stream cancelled by one and left open by the other).

    python scripts/gen_sync.py            # (re)write _sync.py; `make sdk-gen`
    python scripts/gen_sync.py --check    # exit 1 when the committed _sync.py is not what _aio.py generates

The transformation is unasync's (python-trio/unasync: token-based, so strings and comments are left alone; it
drops `async` and `await` and maps __aenter__, __aiter__, AsyncIterator, ... to their blocking names), given:
- every name in _aio.py with an `Async` / `_Async` class prefix or an `async_` function prefix, without it
  (AsyncChat -> Chat, _AsyncEventStream -> _EventStream, async_sleep -> sleep), derived from the source, so that a
  new resource class needs no entry here;
- `aclose` -> `close` and `anext` -> `next`.
Then the module docstring is replaced by one that says the file is generated, and continuation lines are aligned
again with autopep8 (pycodestyle's E12x fixes only: dropping `async ` or `await ` moves the bracket they were
aligned with), so that the output reads like code written by hand and a traceback into it is easy to follow.
The part of a client that truly differs is not generated: _channel.py (transports) and _io.py (sleep, file reads).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
from pathlib import Path

import autopep8
import unasync

PACKAGE = Path(__file__).resolve().parent.parent / "typecase" / "client"
SOURCE = PACKAGE / "_aio.py"
TARGET = PACKAGE / "_sync.py"

PREFIXED = re.compile(r"\b(_?)(?:Async(?=[A-Z])|async_)(\w+)")
RENAMES = {"aclose": "close", "anext": "next"}
LINE_LENGTH = 120  # the SDK's line length (its code is wrapped at 120 columns)

HEADER = '''"""The blocking client: `Client` and its resource helpers, over grpcio's synchronous channel.

GENERATED from _aio.py by scripts/gen_sync.py: do not edit. Change _aio.py, then run `make sdk-gen`.
"""'''


def replacements(source: str) -> dict[str, str]:
    """Each prefixed name of the source -> the same name without its prefix, plus RENAMES."""
    names = {match.group(0): match.group(1) + match.group(2) for match in PREFIXED.finditer(source)}
    return {**names, **RENAMES}


def generate(source: str) -> str:
    """The text of _sync.py for the text of _aio.py."""
    with tempfile.TemporaryDirectory() as folder:
        aio, sync = Path(folder) / "_aio.py", Path(folder) / "_sync.py"
        aio.write_text(source, encoding="utf-8")
        unasync.unasync_files([str(aio)], [unasync.Rule("_aio.py", "_sync.py", replacements(source))])
        text = sync.read_text(encoding="utf-8")
    docstring = ast.parse(text).body[0]
    if not (isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)):
        raise SystemExit(f"{SOURCE.name} must start with its module docstring")
    body = text.splitlines(keepends=True)[docstring.end_lineno or 0:]
    text = HEADER + "\n" + "".join(body)
    return str(autopep8.fix_code(text, options={"select": ["E12"], "max_line_length": LINE_LENGTH}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when _sync.py is not up to date, write nothing")
    args = parser.parse_args(argv)
    expected = generate(SOURCE.read_text(encoding="utf-8"))
    if args.check:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != expected:
            print(f"{TARGET} is stale: it is generated from {SOURCE.name}; run `make sdk-gen` and commit both",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
