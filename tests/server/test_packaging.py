"""A built wheel holds every file of server/: the modules, and the files read beside them at run time (migration
templates, the embeddable chat page), which setuptools leaves out unless setup.py's package_data names them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def test_the_wheel_holds_every_file_under_server(tmp_path):
    # Built from a copy: a build inside the checkout leaves build/ behind, whose stale files would also be packed.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "server", source / "server", ignore=SKIP)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
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
    packed = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "typecase/server/" + path.relative_to(source / "server").as_posix()
        for path in (source / "server").rglob("*")
        if path.is_file()
    }
    assert "typecase/server/embed_static/chat.html" in expected  # the walk sees the data files at all
    assert sorted(expected - packed) == []
