# Fresh machine: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QUESTION ?= What is 17 * 23? Answer with the number.

.PHONY: demo test setup setup-local browser bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.local-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[local]'
	touch $@

$(VENV)/.all-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@ $(VENV)/.local-installed

setup-local: $(VENV)/.local-installed
setup: $(VENV)/.all-installed

demo: setup-local
	$(VENV)/bin/podium ask --pool embedded "$(QUESTION)"

# The browser test drives Debian's Chromium; install it when missing (needs root, as on CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: setup browser
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_decision_latency.py
