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

# The line working with a PLC: the daemon triggered over Modbus TCP (127.0.0.1:5020) by the PLC simulator
# (tools/plc_sim.py, the twin of tools/plc/FB_InspectdVision.st). Ends on its own: the simulator gives up
# after 60 s without an answer and shows the daemon's log; the daemon gets SIGTERM on every exit.
PLC_DEMO_CONFIG ?= configs/demo/station-plc.yaml
PLC_DEMO_PORT ?= 5020
plc-demo: $(STAMP)
	@mkdir -p var
	@$(BIN)/inspectd run --config $(PLC_DEMO_CONFIG) > var/plc-demo.log 2>&1 & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid' EXIT; \
	$(BIN)/python tools/plc_sim.py modbus --port $(PLC_DEMO_PORT) --parts $${PARTS:-200} --connect-timeout 60 \
		|| { rc=$$?; echo "plc-demo failed (exit $$rc); last lines of var/plc-demo.log:"; \
		     tail -n 20 var/plc-demo.log; exit $$rc; }

# A fleet on one broker: a real Mosquitto, 4 synthetic stations (one process each, as inspectd@lineN) and a watcher
# with yield and reject reasons per station; OUTAGE=6 stops the broker 6 s mid-run (store-and-forward).
fleet-demo: $(STAMP)
	$(BIN)/python tools/fleet_demo.py --stations $${STATIONS:-4} --seconds $${DURATION:-40} --outage $${OUTAGE:-0}

clean:
	rm -rf $(VENV)
