"""Maps the server/ folder to the `typecase.server` package, subpackages included (pyproject.toml has the rest)."""

from setuptools import find_namespace_packages, setup

setup(
    package_dir={"typecase.server": "server"},
    packages=["typecase.server", *(f"typecase.server.{p}" for p in find_namespace_packages("server"))],
    package_data={"typecase.server": ["infra/migrations/*.ini", "infra/migrations/*.mako"]},
)
