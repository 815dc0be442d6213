"""Burst against a pipeline slower than the PLC: what the PLC contract (README) gives a line that triggers as
fast as READY allows.

The real daemon in this process (Modbus server on 127.0.0.1, synthetic camera fired per trigger, a test model
with extra compute from tests/onnx_models.py) and the simulated PLC program of tools/plc_sim.py as a pymodbus
client. Prints: parts triggered and latched, whether results came in trigger order, fail-safes by reason,
MISSED_TRIGGER/OVERRUN seen, achieved parts/s against the inference bound, trigger -> result at the PLC.

  .venv/bin/python tools/plc_burst.py --parts 300 --matmuls 20 --budget-ms 200
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", type=int, default=300)
    p.add_argument("--matmuls", type=int, default=20, help="extra compute in the model (about 1 ms each here)")
    p.add_argument("--budget-ms", type=float, default=200.0)
    p.add_argument("--queue-depth", type=int, default=2)
    args = p.parse_args(argv)

    import structlog

    from inspectd.config.load import load_config
    from inspectd.daemon import Daemon, Options
    from inspectd.plc.config import LayoutConfig
    from tests.onnx_models import slow_model
    from tests.plc.peers import free_port, wait_port
    from tools.plc_sim import ModbusPlcIO, PlcSim, pct

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    from tests.conftest import write_station

    tmp = Path(tempfile.mkdtemp(prefix="plc-burst-"))
    port = free_port()
    station = {"cycle_budget_ms": args.budget_ms, "trigger": {"source": "plc"},
               "camera": {"type": "synthetic", "bank": 8, "rate_hz": None, "software_trigger": True},
               "pipeline": {"queue_depth": args.queue_depth},
               "plc": {"type": "modbus_server", "port": port,
                       "handshake": {"plc_heartbeat_ms": 0, "buffer_depth": 32}},
               "archive": {"enabled": False}}
    path = write_station(tmp, station, model=slow_model(tmp / "slow.onnx", matmuls=args.matmuls))
    d = Daemon(load_config(path), Options(handle_signals=False))
    t = threading.Thread(target=d.run, name="daemon")
    t.start()
    while d.pipeline is None or not d.pipeline._started:
        if not t.is_alive():
            print("the daemon did not start", file=sys.stderr)
            return 2
        time.sleep(0.05)
    wait_port(port, 10)
    io = ModbusPlcIO("127.0.0.1", port, LayoutConfig())
    t0 = time.monotonic()
    rep = PlcSim(io, seed=1).run(args.parts, timeout_s=600)
    wall = time.monotonic() - t0
    io.close()
    pipe = d.pipeline
    infer_ms = pipe.stamps["infer"].typical_s * 1e3
    refusals = dict(pipe.admission.refusals)
    d.request_stop()
    t.join(60)
    with sqlite3.connect(tmp / "journal.sqlite") as db:
        rows = list(db.execute("SELECT part_id, verdict, reason FROM verdicts ORDER BY seq"))
    failsafes = Counter(r for _, v, r in rows if v == "failsafe")
    lat = [(rep.t_seen[i] - rep.t_trigger[i]) * 1e3 for i in rep.t_seen if i in rep.t_trigger]
    print(f"parts triggered {len(rep.triggered)}, latched {len(rep.results)}, missing {len(rep.missing)}; "
          f"results in trigger order: {rep.order == rep.triggered}; journal in trigger order: "
          f"{[r[0] for r in rows] == rep.triggered}")
    print(f"fail-safes {dict(failsafes) or 0}; MISSED_TRIGGER seen {rep.missed_seen}, OVERRUN seen {rep.overrun_seen}")
    print(f"{len(rep.results) / wall:.1f} parts/s; inference {infer_ms:.1f} ms/part (moving average at the end); "
          f"READY held low by the pipeline (reservations refused): {refusals}")
    print(f"trigger -> result at the PLC: p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms, max "
          f"{max(lat) if lat else float('nan'):.1f} ms (budget {args.budget_ms:.0f} ms); load {os.getloadavg()[0]:.1f}")
    return 0 if not rep.missing and rep.order == rep.triggered else 1


if __name__ == "__main__":
    sys.exit(main())
