# Fresh machine: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

# llama-cpp-python compiles llama.cpp from source. Podium only calls libllama, so skip what it never
# uses: the multimodal (llava/mtmd) library, and tests/tools/examples/server (already off when
# llama.cpp is built as a subproject; stated so a newer release that flips a default cannot add them).
# llama-cpp-python forces LLAMA_BUILD_COMMON on and LLAMA_CURL off itself. Override with CMAKE_ARGS=...
CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF
export CMAKE_ARGS
BUILD_NOTE := note: the first setup compiles llama.cpp (llama-cpp-python): about 1000 CPU-seconds: some 9 minutes on an idle 2-core machine, much longer on a busy one (bench/results/setup.md). Progress below every 15 s; full log in
PIP_INSTALL = $(PY) -m pip install -v --progress-bar off

.PHONY: demo test setup setup-local browser services bench bench-peers lint

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.local-installed: pyproject.toml | $(VENV)/bin/python
	@echo "$(BUILD_NOTE) $(VENV)/setup-local.log"
	$(PIP_INSTALL) -e '.[local]' 2>&1 | $(PYTHON) scripts/pip_progress.py $(VENV)/setup-local.log
	touch $@

$(VENV)/.all-installed: pyproject.toml | $(VENV)/bin/python
	@test -f $(VENV)/.local-installed || echo "$(BUILD_NOTE) $(VENV)/setup-all.log"
	$(PIP_INSTALL) -e '.[all,test]' 2>&1 | $(PYTHON) scripts/pip_progress.py $(VENV)/setup-all.log
	touch $@ $(VENV)/.local-installed

setup-local: $(VENV)/.local-installed
setup: $(VENV)/.all-installed

# `make demo`: single call vs the podium loop on small checked tasks (embedded pool, offline, ~2 min).
# `make demo QUESTION="..."`: orchestrate your own question instead.
demo: setup-local
ifeq ($(origin QUESTION),command line)
	$(VENV)/bin/podium ask --pool embedded "$(QUESTION)"
else
	$(VENV)/bin/podium demo
endif

# The browser test drives Debian's Chromium; install it when missing (needs root, as on CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

# The shared-state and PostgreSQL store tests start real servers (on 127.0.0.1, free ports): install
# Debian's redis-server and postgresql when missing (needs root, as on CI).
services:
	@command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql >/dev/null)

# Lint and format (ruff) over everything; strict typing (mypy) over src/podium.
lint: setup
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy

test: setup browser services lint
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_decision_latency.py

# The peers and profiler the server benchmarks need (LiteLLM's proxy, py-spy): not podium dependencies.
bench-peers: $(VENV)/.bench-installed

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.all-installed
	$(PIP_INSTALL) -e '.[bench]' 2>&1 | $(PYTHON) scripts/pip_progress.py $(VENV)/setup-bench.log
	touch $@
