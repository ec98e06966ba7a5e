# One command each, on a fresh machine: `make demo` (the main job) and `make test`.
# Both do their own set-up: system libraries (libfluidsynth, for audio), a virtualenv in .venv, the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned for the set-up only (a CPU build that lies on disk here); pyproject keeps torch>=2.4 open
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup system-deps demo test test-all lint docs clean

setup: $(VENV)/.installed

system-deps:
	@bash scripts/install_system_deps.sh

$(VENV)/.installed: pyproject.toml scripts/install_system_deps.sh
	@bash scripts/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/theremin-demo

test: setup
	$(BIN)/pytest

test-all: setup
	$(BIN)/pytest -m "slow or not slow"

lint: setup
	$(BIN)/ruff check .

# docs/config.md, the config reference, from conf/ (tests/test_docs.py fails when it is stale)
docs: setup
	$(BIN)/python scripts/gen_config_docs.py

clean:
	rm -rf $(VENV) outputs/* data
