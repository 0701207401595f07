"""Maps the server/ folder to the `typecase.server` package, subpackages included (pyproject.toml has the rest).

package_data lists every file the server reads beside its modules at run time; tests/server/test_packaging.py
builds a wheel and fails when a file under server/ is missing from it."""

from setuptools import find_namespace_packages, setup

setup(
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
