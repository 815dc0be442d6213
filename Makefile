# Quick start: `make run` (daemon on the embedded default), `make test` (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint venv clean bench

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/inspectd run --config configs/demo/station.yaml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check inspectd tests tools

bench: $(STAMP)
	$(BIN)/inspectd bench --config configs/demo/station.yaml --parts 2000 --json

clean:
	rm -rf $(VENV)
