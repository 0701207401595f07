"""Maps the server/ folder to the `typecase.server` package, subpackages included (pyproject.toml has the rest).

package_data lists every file the server reads beside its modules at run time; tests/server/test_packaging.py
builds a wheel and fails when a file under server/ is missing from it. A wheel also carries the web console when it
was built (console/dist, `make console`) as typecase/server/console_dist, so a server installed from the wheel
serves it; an editable install reads console/dist in the checkout instead (config.py)."""

import shutil
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

CONSOLE_DIST = Path(__file__).resolve().parent / "console" / "dist"


class BuildPyWithConsole(build_py):
    def run(self) -> None:
        super().run()
        if (CONSOLE_DIST / "index.html").is_file() and not self.editable_mode:
            target = Path(self.build_lib) / "typecase" / "server" / "console_dist"
            shutil.copytree(CONSOLE_DIST, target, dirs_exist_ok=True)


setup(
    cmdclass={"build_py": BuildPyWithConsole},
    package_dir={"typecase.server": "server"},
    packages=["typecase.server", *(f"typecase.server.{p}" for p in find_namespace_packages("server"))],
    package_data={
        "typecase.server": [
            "infra/migrations/*.ini",  # infra/schema.py
            "infra/migrations/*.mako",
            "embed_static/*",  # the embeddable chat page, embed.py
        ]
    },
)
