"""`Client` and `AsyncClient` keep one surface. typecase/client/_sync/ is generated from _async/
(clients/python/scripts/gen_sync.py), so the first test fails when the committed _sync/ is stale; the surface
tests compare what a user sees (classes, methods, parameters and their defaults, docstrings, return types, with
AsyncX/Awaitable/AsyncIterator read as X/plain/Iterator) and fail when the two differ, whatever produced the
files. The checker is itself tested on small pairs that differ in one way each, so that it cannot pass by comparing
nothing."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import typecase.client
from tests.conftest import ROOT
from typecase.client import _async, _sync

SDK = ROOT / "clients" / "python"
BLOCKING_NAMES = {
    "aclose": "close",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
}
COMPARED_DUNDERS = {"__init__", "__enter__", "__exit__", "__iter__", "__next__"}


def blocking_name(name: str) -> str:
    """The name a member or class of the asyncio client has in the blocking one."""
    return BLOCKING_NAMES.get(name) or re.sub(r"^(_?)Async(?=[A-Z])", r"\1", name)


def blocking_type(annotation: Any) -> str:
    """An annotation as the blocking client would spell it: Awaitable[X] -> X, AsyncIterator -> Iterator,
    AsyncChatStream -> ChatStream."""
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    text = re.sub(r"\bAwaitable\[(.*)\]$", r"\1", text)
    return re.sub(r"\b(_?)Async(?=[A-Z])", r"\1", text)


def members(cls: type) -> dict[str, Any]:
    """The members a user of `cls` sees, by their blocking name: public ones and the protocol dunders, inherited
    ones included (but not object's)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):  # base first, so that overrides win
        for name, value in vars(klass).items():
            name = blocking_name(name)
            if not name.startswith("_") or name in COMPARED_DUNDERS:
                found[name] = value
    return found


def describe(value: Any) -> dict[str, Any]:
    """What is compared of one member."""
    if isinstance(value, property):
        return {
            "kind": "property",
            "doc": inspect.getdoc(value),
            "settable": value.fset is not None,
            "type": blocking_type(inspect.signature(value.fget).return_annotation),
        }
    if not callable(value):
        return {"kind": "attribute", "value": repr(value)}
    signature = inspect.signature(value)
    parameters = [
        (p.name, p.kind.name, "" if p.default is p.empty else repr(p.default), blocking_type(p.annotation))
        for p in signature.parameters.values()
    ]
    return {
        "kind": "method",
        "doc": inspect.getdoc(value),
        "parameters": parameters,
        "returns": blocking_type(signature.return_annotation),
    }


def surface_differences(async_cls: type, sync_cls: type) -> list[str]:
    """How the blocking class differs from what the asyncio class promises; [] when they match."""
    label = sync_cls.__name__
    differences = []
    if inspect.getdoc(async_cls) != inspect.getdoc(sync_cls):
        differences.append(f"{label}: class docstrings differ")
    expected, actual = members(async_cls), members(sync_cls)
    for name in sorted(expected.keys() - actual.keys()):
        differences.append(f"{label}.{name}: missing from the blocking client")
    for name in sorted(actual.keys() - expected.keys()):
        differences.append(f"{label}.{name}: missing from the asyncio client")
    for name in sorted(expected.keys() & actual.keys()):
        blocking = actual[name]
        if inspect.iscoroutinefunction(blocking) or inspect.isasyncgenfunction(blocking):
            differences.append(f"{label}.{name}: async in the blocking client")
        want, got = describe(expected[name]), describe(blocking)
        for key in sorted(want.keys() | got.keys()):
            if key == "parameters" and key in want and key in got:
                only_async = [p for p in want[key] if p not in got[key]]
                only_blocking = [p for p in got[key] if p not in want[key]]
                if only_async or only_blocking:
                    differences.append(f"{label}.{name}: parameters {only_async} != {only_blocking}")
                elif want[key] != got[key]:
                    differences.append(f"{label}.{name}: parameters in another order")
            elif want.get(key) != got.get(key):
                differences.append(f"{label}.{name}: {key} {want.get(key)!r} != {got.get(key)!r}")
    return differences


def module_names(package: Any) -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__))


def classes(package: Any, module_name: str) -> dict[str, type]:
    """The classes a module of the package defines (not those it imports); none when there is no such module."""
    name = f"{package.__name__}.{module_name}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        return {}
    return {
        name: value
        for name, value in vars(module).items()
        if inspect.isclass(value) and value.__module__ == module.__name__
    }


def class_pairs() -> list[tuple[type, type | None]]:
    """(asyncio class, its blocking twin from the _sync module of the same name, or None)."""
    pairs: list[tuple[type, type | None]] = []
    for module_name in module_names(_async):
        blocking = classes(_sync, module_name)
        for name, cls in sorted(classes(_async, module_name).items()):
            pairs.append((cls, blocking.get(blocking_name(name))))
    return pairs


def test_the_blocking_client_is_generated_from_the_asyncio_one():
    result = subprocess.run(
        [sys.executable, "scripts/gen_sync.py", "--check"], cwd=SDK, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("async_cls", "sync_cls"), class_pairs(), ids=lambda cls: getattr(cls, "__name__", "-"))
def test_each_asyncio_class_has_a_blocking_twin_with_the_same_surface(async_cls, sync_cls):
    assert sync_cls is not None, f"{async_cls.__name__} has no blocking twin in _sync/"
    assert surface_differences(async_cls, sync_cls) == []


def test_each_blocking_class_has_an_asyncio_twin():
    assert module_names(_sync) == module_names(_async)
    for module_name in module_names(_sync):
        twins = {blocking_name(name) for name in classes(_async, module_name)}
        assert set(classes(_sync, module_name)) == twins, module_name


def test_the_package_exports_both_clients_of_each_pair():
    exported = set(typecase.client.__all__)
    async_names = {name for name in exported if name.startswith("Async")}
    assert async_names, "no asyncio class exported"
    assert {blocking_name(name) for name in async_names} <= exported
    blocking_classes = {
        name
        for name in exported
        if inspect.isclass(value := getattr(typecase.client, name))
        and value.__module__.startswith(f"{_sync.__name__}.")
    }
    assert {f"Async{name}" for name in blocking_classes} <= exported


# -- the checker and the generator, on small pairs ----------------------------------------------------------------
ASYNC_SAMPLE = '''
class AsyncSample:
    """A sample."""

    async def get(self, item_id: str, *, timeout: float | None = None) -> int:
        """Get one."""
        return 0

    def items(self, *, page_size: int = 100) -> AsyncIterator[int]:
        """All of them."""
        raise NotImplementedError

    async def aclose(self) -> None:
        pass

    @property
    def name(self) -> str:
        """Its name."""
        return ""
'''
SYNC_SAMPLE = '''
class Sample:
    """A sample."""

    def get(self, item_id: str, *, timeout: float | None = None) -> int:
        """Get one."""
        return 0

    def items(self, *, page_size: int = 100) -> Iterator[int]:
        """All of them."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    @property
    def name(self) -> str:
        """Its name."""
        return ""
'''


def sample(source: str) -> type:
    namespace: dict[str, Any] = {"AsyncIterator": AsyncIterator, "Iterator": Iterator}
    exec(compile("from __future__ import annotations\n" + source, "<sample>", "exec"), namespace)
    return next(value for name, value in namespace.items() if name.endswith("Sample"))


def test_matching_samples_have_no_differences():
    assert surface_differences(sample(ASYNC_SAMPLE), sample(SYNC_SAMPLE)) == []


@pytest.mark.parametrize(
    ("change", "old", "new", "expected"),
    [
        ("a method is missing", "    def close(self) -> None:\n        pass\n", "", "close: missing from the blocking"),
        ("a parameter is renamed", "get(self, item_id: str", "get(self, id: str", "get: parameters"),
        ("a default changes", "page_size: int = 100", "page_size: int = 50", "items: parameters"),
        (
            "a keyword-only parameter becomes positional",
            "item_id: str, *, timeout",
            "item_id: str, timeout",
            "get: parameters",
        ),
        ("a parameter's type changes", "timeout: float | None", "timeout: int | None", "get: parameters"),
        ("a docstring changes", '"""Get one."""', '"""Fetch one."""', "get: doc"),
        ("the class docstring changes", '"""A sample."""', '"""An example."""', "Sample: class docstrings differ"),
        ("a return type changes", "-> int:", "-> str:", "get: returns"),
        ("an iterator yields another type", "Iterator[int]", "Iterator[str]", "items: returns"),
        ("a property's type changes", "def name(self) -> str", "def name(self) -> bytes", "name: type"),
        ("a method stays async", "    def get(", "    async def get(", "get: async in the blocking client"),
        (
            "a method is added",
            "    def close(",
            "    def extra(self) -> None:\n        pass\n\n    def close(",
            "extra: missing from the asyncio client",
        ),
    ],
)
def test_the_checker_reports_each_kind_of_difference(change, old, new, expected):
    assert old in SYNC_SAMPLE
    differences = surface_differences(sample(ASYNC_SAMPLE), sample(SYNC_SAMPLE.replace(old, new, 1)))
    assert any(expected in line for line in differences), (change, differences)


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_sync", SDK / "scripts" / "gen_sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_writes_an_asyncio_module_once_more_as_a_blocking_one():
    source = '''"""Things (strings stay as they are: `async for` over `AsyncThings.watch`)."""

from typecase.client._async.resource import AsyncResource
from typecase.client._io import async_sleep


class AsyncThings(AsyncResource):
    async def get_thing(self, thing_id: str, *,
                        timeout: float | None = None) -> things_pb2.Thing:
        await async_sleep(0)  # comments too: await
        return (await self._unary(self.stub.GetThing, request, things_pb2.GetThingResponse,
                                  timeout)).thing

    def watch(self) -> AsyncIterator[AsyncThingStream]:
        return self._stream()

    async def __aexit__(self, *exc: object) -> None:
        await self._events.aclose()
'''
    generated = load_generator().generate({"things.py": source, "other.py": "AsyncOther = 1\n"})
    header = (
        "# GENERATED from _async/things.py by scripts/gen_sync.py: do not edit; edit that file, run `make sdk-gen`."
    )
    assert (
        generated["things.py"]
        == header
        + '''
"""Things (strings stay as they are: `async for` over `AsyncThings.watch`)."""

from typecase.client._sync.resource import Resource
from typecase.client._io import sleep


class Things(Resource):
    def get_thing(self, thing_id: str, *,
                  timeout: float | None = None) -> things_pb2.Thing:
        sleep(0)  # comments too: await
        return (self._unary(self.stub.GetThing, request, things_pb2.GetThingResponse,
                            timeout)).thing

    def watch(self) -> Iterator[ThingStream]:
        return self._stream()

    def __exit__(self, *exc: object) -> None:
        self._events.close()
'''
    )
    assert generated["other.py"].endswith("\nOther = 1\n")


def test_the_blocking_client_refuses_a_close_grace_rather_than_ignore_it():
    client = typecase.client.Client("127.0.0.1:9")
    with pytest.raises(ValueError, match="grace is for AsyncClient"):
        client.close(grace=1.0)
    client.close()
