"""A built wheel holds every file of server/: the modules, and the files read beside them at run time (migration
templates, the embeddable chat page), which setuptools leaves out unless setup.py's package_data names them; and the
built web console, which a server installed from the wheel serves by default."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def build_wheel(tmp_path: Path, console_files: dict[str, str]) -> tuple[Path, Path]:
    """A wheel of a copy of the checkout (a build inside it leaves build/ behind, whose stale files would also be
    packed) whose console/dist holds `console_files`; returns the source copy and the wheel."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "server", source / "server", ignore=SKIP)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name, content in console_files.items():
        (source / "console" / "dist" / name).parent.mkdir(parents=True, exist_ok=True)
        (source / "console" / "dist" / name).write_text(content)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "out"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "out").glob("typecase_server-*.whl")
    return source, wheel


def test_the_wheel_holds_every_file_under_server(tmp_path):
    source, wheel = build_wheel(tmp_path, {})
    packed = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "typecase/server/" + path.relative_to(source / "server").as_posix()
        for path in (source / "server").rglob("*")
        if path.is_file()
    }
    assert "typecase/server/embed_static/chat.html" in expected  # the walk sees the data files at all
    assert sorted(expected - packed) == []


def test_a_server_installed_from_the_wheel_serves_the_console_built_before_it(tmp_path):
    console = {"index.html": "<!doctype html><title>Typecase console</title>", "assets/app-1a2b.js": "void 0;"}
    _, wheel = build_wheel(tmp_path, console)
    packed = set(zipfile.ZipFile(wheel).namelist())
    assert {"typecase/server/console_dist/index.html", "typecase/server/console_dist/assets/app-1a2b.js"} <= packed

    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    # The unpacked wheel comes first on the path, before this checkout's editable install.
    probe = "from typecase.server.config import Settings; import typecase.server; print(typecase.server.__file__); "
    probe += "print(Settings().console_dir)"
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    module, console_dir = shown.stdout.split()
    assert Path(module).is_relative_to(installed)
    assert (Path(console_dir) / "index.html").read_text() == console["index.html"]
