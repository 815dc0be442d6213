# Quick start: `make run` (daemon on the embedded default), `make test` (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint venv clean bench plc-demo fleet-demo

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

# A fleet on one broker: a real Mosquitto, 4 synthetic stations (one process each, as inspectd@lineN) and a watcher
# with yield and reject reasons per station; OUTAGE=6 stops the broker 6 s mid-run (store-and-forward).
fleet-demo: $(STAMP)
	$(BIN)/python tools/fleet_demo.py --stations $${STATIONS:-4} --seconds $${DURATION:-40} --outage $${OUTAGE:-0}

clean:
	rm -rf $(VENV)
