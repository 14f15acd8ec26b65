# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv and install slimlab into it on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch: installed first, so the project's torch range pulls nothing more.
TORCH ?= torch==2.13.0

.PHONY: setup tools demo test lint bench

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/slimlab --batch presets/demo.yaml

# tmux drives the end-to-end workbench test; without it that test is skipped with the reason.
tools:
	@command -v tmux >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null 2>&1 \
		|| echo "tmux could not be installed: the end-to-end workbench test will be skipped"

test: setup tools
	$(BIN)/ruff check engine tui tests benchmarks
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check engine tui tests benchmarks

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done
