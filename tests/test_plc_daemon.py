"""The real daemon as a subprocess with the demo PLC station: parts triggered by a PLC, results back, SIGTERM
leaves the outputs in the safe state (not READY, ERROR, ERROR_CODE 7) for the PLC to read."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pymodbus.client import ModbusTcpClient

from inspectd.plc.layout import ErrorCode, Layout
from tests.plc.peers import free_port, wait_port
from tools.plc_sim import ModbusPlcIO, PlcSim

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_daemon_parts_from_plc_then_safe_state_on_sigterm(tmp_path: Path) -> None:
    station = yaml.safe_load((REPO / "configs/demo/station-plc.yaml").read_text())
    port = free_port()
    station["products_dir"] = str(REPO / "configs/demo/products")
    station["plc"]["port"] = port
    station["plc"]["linger_ms"] = 1500  # long enough for this test's PLC to poll the safe state
    station["journal"] = {"path": str(tmp_path / "journal.sqlite")}
    station["archive"] = {"enabled": False}
    station["metrics"] = {"enabled": False}
    (tmp_path / "station.yaml").write_text(yaml.safe_dump(station))
    inspectd = Path(sys.executable).with_name("inspectd")
    daemon = subprocess.Popen([str(inspectd), "run", "--config", str(tmp_path / "station.yaml")],
                              stdout=(tmp_path / "daemon.log").open("w"), stderr=subprocess.STDOUT)
    try:
        wait_port(port, 60)
        io = ModbusPlcIO("127.0.0.1", port, Layout().cfg)
        rep = PlcSim(io, recipes={20: 1}).run(40, timeout_s=60)
        io.close()
        assert len(rep.triggered) == 40 and not rep.missing and rep.recipe == {1: True}
        c = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        assert c.connect()
        daemon.send_signal(signal.SIGTERM)
        end, seen = time.monotonic() + 5, None
        while time.monotonic() < end:
            rr = c.read_holding_registers(100, count=20, device_id=1)
            if rr.isError():
                break
            b = Layout().decode_b(rr.registers)
            if b.error_code == ErrorCode.SHUTDOWN and not b.online:  # draining shows code 7 with ONLINE first
                seen = b
                break
            time.sleep(0.01)
        c.close()
        assert seen is not None, (tmp_path / "daemon.log").read_text()[-3000:]
        assert (seen.ready, seen.result_valid, seen.online, seen.error) == (False, False, False, True)
        assert daemon.wait(20) == 0
        with sqlite3.connect(tmp_path / "journal.sqlite") as db:  # what the PLC saw == what was journaled
            journal = {pid: (bool(ok), code) for pid, ok, code in
                       db.execute("SELECT part_id, plc_ok, result_code FROM verdicts")}
        assert journal == rep.results
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(5)
