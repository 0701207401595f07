"""Generate typecase/client/_sync/ (the blocking `Client`) from _async/ (`AsyncClient`), so that the two clients
are written once and cannot drift: by hand they had drifted (27 duplicated runs, docstrings on one side only, a
WatchFile stream cancelled by one and left open by the other).

    python scripts/gen_sync.py            # (re)write _sync/; `make sdk-gen`
    python scripts/gen_sync.py --check    # exit 1 when the committed _sync/ is not what _async/ generates

Each _async/NAME.py becomes _sync/NAME.py by unasync's transformation (python-trio/unasync: token-based, so strings
and comments are left alone; it drops `async` and `await` and maps __aenter__, __aiter__, AsyncIterator, ... to
their blocking names), given:
- every name in _async/ with an `Async` / `_Async` class prefix or an `async_` function prefix, without it
  (AsyncChat -> Chat, _AsyncEventStream -> _EventStream, async_sleep -> sleep), derived from the sources, so that a
  new service module needs no entry here;
- `_async` -> `_sync` (the imports between the modules), `aclose` -> `close` and `anext` -> `next`.
Then continuation lines are aligned again with autopep8 (pycodestyle's E12x fixes only: dropping `async ` or
`await ` moves the bracket they were aligned with), so that the output reads like code written by hand and a
traceback into it is easy to follow, and a first line says where the file comes from.
What truly differs between the clients is not generated: ../_channel.py (transports) and ../_io.py (waits).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import autopep8
import unasync

PACKAGE = Path(__file__).resolve().parent.parent / "typecase" / "client"
SOURCE = PACKAGE / "_async"
TARGET = PACKAGE / "_sync"

PREFIXED = re.compile(r"\b(_?)(?:Async(?=[A-Z])|async_)(\w+)")
RENAMES = {"_async": "_sync", "aclose": "close", "anext": "next"}
LINE_LENGTH = 120  # the SDK's line length (its code is wrapped at 120 columns)
HEADER = "# GENERATED from _async/{name} by scripts/gen_sync.py: do not edit; edit that file, run `make sdk-gen`.\n"


def replacements(sources: dict[str, str]) -> dict[str, str]:
    """Each prefixed name of the sources -> the same name without its prefix, plus RENAMES."""
    names = {match.group(0): match.group(1) + match.group(2)
             for text in sources.values() for match in PREFIXED.finditer(text)}
    return {**names, **RENAMES}


def generate(sources: dict[str, str]) -> dict[str, str]:
    """The text of each _sync/ module for the text of each _async/ module, by file name."""
    with tempfile.TemporaryDirectory() as folder:
        source_dir, target_dir = Path(folder) / "_async", Path(folder) / "_sync"
        source_dir.mkdir()
        for name, text in sources.items():
            (source_dir / name).write_text(text, encoding="utf-8")
        rule = unasync.Rule("/_async/", "/_sync/", replacements(sources))
        unasync.unasync_files([str(source_dir / name) for name in sources], [rule])
        generated = {name: (target_dir / name).read_text(encoding="utf-8") for name in sources}
    options = {"select": ["E12"], "max_line_length": LINE_LENGTH}
    return {name: HEADER.format(name=name) + str(autopep8.fix_code(text, options=options))
            for name, text in generated.items()}


def expected() -> dict[str, str]:
    return generate({path.name: path.read_text(encoding="utf-8") for path in sorted(SOURCE.glob("*.py"))})


def stale(wanted: dict[str, str]) -> list[str]:
    """The _sync/ files that are missing, different or left over from a deleted _async/ module."""
    present = {path.name: path.read_text(encoding="utf-8") for path in TARGET.glob("*.py")}
    return sorted(name for name in wanted.keys() | present.keys() if wanted.get(name) != present.get(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when _sync/ is not up to date, write nothing")
    args = parser.parse_args(argv)
    wanted = expected()
    if args.check:
        if names := stale(wanted):
            print(f"{TARGET} is stale ({', '.join(names)}): it is generated from {SOURCE}; run `make sdk-gen` and "
                  "commit both", file=sys.stderr)
            return 1
        return 0
    TARGET.mkdir(exist_ok=True)
    for path in TARGET.glob("*.py"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        (TARGET / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
