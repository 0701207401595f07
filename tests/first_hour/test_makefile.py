"""Issue 24 items 2 and 3: `make run` builds the console when npm is there (and says it is serving the API alone
when it is not); the install says what it is doing during the long llama-cpp-python compile."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.conftest import ROOT

MAKE = shutil.which("make")


def make(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"PATH": path} if path is not None else {})}
    return subprocess.run(
        [MAKE, "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_run_builds_the_console_first_when_npm_is_there():
    plan = make("-n", "run", "VENV=/nonexistent/venv")  # -n: print the commands, run only the recursive make
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    build = next(i for i, line in enumerate(lines) if "npm run --silent build" in line)
    serve = next(i for i, line in enumerate(lines) if "typecase serve" in line)
    assert build < serve


def test_without_npm_run_says_the_console_is_not_built_and_goes_on(tmp_path):
    (tmp_path / "make").symlink_to(MAKE)  # a PATH with make and nothing else: no npm
    result = make("console-if-npm", path=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "npm not found: serving the API without the web console" in result.stdout


def test_install_announces_each_step_and_the_long_compile():
    plan = make("-n", "install", "VENV=/nonexistent/venv").stdout
    assert "compiling llama-cpp-python from source: about 8 minutes on 2 cores" in plan
    assert "still compiling llama-cpp-python" in plan  # the heartbeat while pip -q is silent
    assert plan.index("llama-cpp-python==") < plan.index("-e '.[dev]'")  # compiled on its own, announced


def test_a_step_run_with_the_heartbeat_keeps_its_output_and_exit_status(tmp_path):
    makefile = tmp_path / "steps.mk"
    makefile.write_text(
        f"include {ROOT}/Makefile\n"
        "ok:\n\t$(call WAITING,testing,sleep 0.3; echo finished)\n"
        "failing:\n\t$(call WAITING,testing,sleep 0.3; exit 3)\n"
    )
    ok = make("-f", str(makefile), "ok")
    assert ok.returncode == 0 and ok.stdout.strip() == "finished", ok
    failing = make("-f", str(makefile), "failing")
    assert failing.returncode != 0  # a failed pip fails the install, heartbeat or not
