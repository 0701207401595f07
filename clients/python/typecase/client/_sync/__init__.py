# GENERATED from _async/__init__.py by scripts/gen_sync.py: do not edit; edit that file, run `make sdk-gen`.
"""The clients, written once, for asyncio: `AsyncClient` (client.py), its base pieces (resource.py, streams.py) and
one module of helpers per service. The blocking `Client` in ../_sync/ is generated from these files by
scripts/gen_sync.py (`make sdk-gen`): `async` and `await` go, and so do the `Async`, `_Async` and `async_` name
prefixes (AsyncChat -> Chat, async_sleep -> sleep); the rest is the same code. The two had been mirrored by hand
(27 duplicated runs) and had drifted: docstrings on one side only, a WatchFile stream left open by one of them.

So a change here is a change to both clients: docstrings must read right for both, and what truly differs lives
outside this package, in ../_channel.py (the transports) and ../_io.py (sleeping, blocking file reads). See the
README, "One source for both clients".
"""
