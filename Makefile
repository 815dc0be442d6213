# Quick start: `make run` (daemon on the embedded default), `make test` (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint venv clean bench plc-demo

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
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/inspectd bench --config configs/demo/station.yaml --parts 2000 --json

# The line working with a PLC: the daemon triggered over Modbus TCP (127.0.0.1:5020) by the PLC simulator.
plc-demo: $(STAMP)
	@$(BIN)/inspectd run --config configs/demo/station-plc.yaml > var/plc-demo.log 2>&1 & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid' EXIT; \
	$(BIN)/python tools/plc_sim.py modbus --port 5020 --parts $${PARTS:-200}

clean:
	rm -rf $(VENV)
