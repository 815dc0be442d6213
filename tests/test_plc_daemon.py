"""The real daemon as a subprocess with the demo PLC station: parts triggered by a PLC, results back, SIGTERM
leaves the outputs in the safe state (not READY, ERROR, ERROR_CODE 7) for the PLC to read."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pymodbus.client import ModbusTcpClient

from inspectd.plc.config import LayoutConfig
from inspectd.plc.layout import ErrorCode, Layout, VisionOutputs, words_to_bytes
from tests.plc.daemon import start_daemon, stop, write_station
from tests.plc.peers import free_port, lmb_server, s7_server, wait_port
from tests.waiting import wait_until
from tools.plc_sim import ModbusPlcIO, PlcSim, S7PlcIO

LAYOUT = Layout()

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
        end, seen = time.monotonic() + 15, None  # after the flush: the last result waits up to 3 s for an ACK
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


class _Memory:
    """The PLC's memory as its own program sees it: Modbus holding registers (libmodbus) or an S7 DB (native)."""

    def __init__(self, kind: str, port: int) -> None:
        self.kind, self.port = kind, port
        self.lay = LayoutConfig(block_a=0, block_b=10) if kind == "s7" else LayoutConfig()
        self.io = S7PlcIO("127.0.0.1", port, self.lay) if kind == "s7" else ModbusPlcIO("127.0.0.1", port, self.lay)

    def read_b(self) -> VisionOutputs:
        return LAYOUT.decode_b(self.io.read_b())

    def write_b(self, b: VisionOutputs) -> None:  # only to plant what a dead process left behind
        words = LAYOUT.encode_b(b)
        if self.kind == "s7":
            self.io._client().db_write(100, 2 * self.lay.block_b, words_to_bytes(words))  # type: ignore[attr-defined]
        else:
            assert not self.io.c.write_registers(self.lay.block_b, words, device_id=1).isError()  # type: ignore[attr-defined]

    def plc(self) -> dict[str, object]:
        common = {"host": "127.0.0.1", "port": self.port, "poll_ms": 10}
        return {"type": "s7", "db": 100, **common} if self.kind == "s7" else {"type": "modbus_client", **common}


def _watch_start(mem: _Memory, daemon: subprocess.Popen[bytes], log: Path, epoch: int,
                 timeout: float = 60) -> list[VisionOutputs]:
    """Block B states seen from the PLC from daemon start until it is up (ERROR_CODE 0 in this RUN_EPOCH)."""
    states: list[VisionOutputs] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert daemon.poll() is None, log.read_text()[-3000:]
        b = mem.read_b()
        if not states or b != states[-1]:
            states.append(b)
        if b.error_code == 0 and b.online and b.run_epoch == epoch:
            return states
        time.sleep(0.002)
    raise AssertionError(f"daemon not up: {states[-3:]}\n{log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["modbus_client", "s7"])
def test_client_modes_starting_state_kill9_restart_and_orderly_exit(kind: str, tmp_path: Path) -> None:
    """What a PLC sees in its own memory in client and S7 modes: STARTING over a dead process's leftovers, the
    heartbeat only while up, a new RUN_EPOCH and RESULT_SEQ that never repeats after kill -9, SHUTDOWN on exit."""
    port = free_port()
    peer = lmb_server(port).start() if kind == "modbus_client" else s7_server(port, native=True).start()
    mem = _Memory(kind, port)
    station = write_station(tmp_path, mem.plc())
    log = tmp_path / "daemon.log"
    stale = VisionOutputs(ready=True, online=True, result_valid=True, result_ok=True, trigger_ack=True,
                          vision_heartbeat=1234, result_seq=77, result_part_id=5)
    daemon = None
    try:
        mem.write_b(stale)  # a previous process died right after showing a result
        daemon = start_daemon(station, log)
        states = _watch_start(mem, daemon, log, 1)
        starting = [s for s in states[1:] if s.error_code == ErrorCode.NOT_READY]
        assert states[0] == stale and starting, states
        for s in starting:  # STARTING: not READY, nothing valid, ERROR 6, the new epoch, heartbeat still
            assert (s.ready, s.result_valid, s.trigger_ack, s.error, s.online) == (False, False, False, True, True)
            assert s.run_epoch == 1 and s.vision_heartbeat == starting[0].vision_heartbeat
        hb = mem.read_b().vision_heartbeat
        rep = PlcSim(mem.io, mem.lay, recipes={5: 1}).run(20, timeout_s=60)
        assert len(rep.triggered) == 20 and not rep.missing
        time.sleep(2 * 0.2)  # 20 parts can pass within one heartbeat period: give it two to count
        up = mem.read_b()
        assert up.vision_heartbeat != hb and up.run_epoch == 1 and up.result_recipe == 1
        last_seq = up.result_seq
        assert last_seq == 20

        daemon.kill()  # kill -9: nothing is written; the PLC sees the last state and a heartbeat standing still
        daemon.wait(10)
        dead = mem.read_b()
        time.sleep(5 * 0.2)  # the documented PLC-side timeout: 5 heartbeat periods
        assert mem.read_b().vision_heartbeat == dead.vision_heartbeat

        daemon = start_daemon(station, log)
        states = _watch_start(mem, daemon, log, 2)
        assert any(s.error_code == ErrorCode.NOT_READY and s.run_epoch == 2 for s in states), states
        rep = PlcSim(mem.io, mem.lay, first_part=1000).run(5, timeout_s=60)
        assert len(rep.triggered) == 5 and not rep.missing
        b = mem.read_b()
        assert b.run_epoch == 2 and b.result_seq - 4 > last_seq  # reserved block skipped, never reused

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        b = mem.read_b()  # what stays in the PLC's memory after an orderly exit
        assert (b.ready, b.result_valid, b.online, b.error, b.error_code, b.trigger_ack) == (
            False, False, False, True, ErrorCode.SHUTDOWN, False)
        assert "Traceback" not in log.read_text()
    finally:
        if daemon is not None:
            stop(daemon)
        mem.io.close()
        peer.stop()


@pytest.mark.slow
def test_server_mode_restart_and_kill9_never_reuse_result_seq(tmp_path: Path) -> None:
    """RUN_EPOCH +1 per start, RESULT_SEQ continues past every earlier process (SIGTERM, then kill -9)."""
    port = free_port()
    station = write_station(tmp_path, {"type": "modbus_server", "port": port, "linger_ms": 0})
    log = tmp_path / "daemon.log"
    seen: list[tuple[int, int]] = []  # (RUN_EPOCH, RESULT_SEQ) of every result the PLC latched
    for i, ending in enumerate(("term", "kill", "term")):
        daemon = start_daemon(station, log)
        try:
            wait_port(port, 60)
            io = ModbusPlcIO("127.0.0.1", port, LayoutConfig())
            pairs: list[tuple[int, int]] = []
            sim = PlcSim(io, first_part=100 * i + 1)
            read = io.read_b

            def spy(read: Callable[[], list[int]] = read, pairs: list[tuple[int, int]] = pairs) -> list[int]:
                words = read()
                b = LAYOUT.decode_b(words)
                if b.result_valid and (not pairs or pairs[-1] != (b.run_epoch, b.result_seq)):
                    pairs.append((b.run_epoch, b.result_seq))
                return words

            io.read_b = spy  # type: ignore[method-assign]
            rep = sim.run(10, timeout_s=60)
            io.close()
            assert len(rep.triggered) == 10 and not rep.missing and len(pairs) == 10
            assert {e for e, _ in pairs} == {i + 1}
            assert not {s for _, s in pairs} & {s for _, s in seen}
            assert not seen or min(s for _, s in pairs) > max(s for _, s in seen)
            seen += pairs
        finally:
            if ending == "kill":
                daemon.kill()
            else:
                daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_connection_flood_at_limitnofile_1024_plc_keeps_its_rate_and_metrics_answer(tmp_path: Path) -> None:
    """1100 idle connections against the daemon at LimitNOFILE=1024 (the systemd default): the PLC keeps
    triggering parts, /metrics answers, the log holds a few rate-limited lines and no traceback."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1300:
        pytest.skip(f"this test process needs 1300 descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    port, mport = free_port(), free_port()
    station = write_station(tmp_path, {"type": "modbus_server", "port": port, "linger_ms": 0}, metrics_port=mport)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(station, log, nofile=1024)
    flood: list[socket.socket] = []
    sim = None
    try:
        wait_port(port, 60)
        wait_port(mport, 60)
        io = ModbusPlcIO("127.0.0.1", port, LayoutConfig())
        sim = PlcSim(io, period_s=0.02)
        runner = threading.Thread(target=sim.run, args=(100_000,), kwargs={"timeout_s": 300}, daemon=True)
        runner.start()
        rep = sim.report
        end = time.monotonic() + 60
        while len(rep.results) < 60 and time.monotonic() < end:
            time.sleep(0.05)
        t0, n0 = time.monotonic(), len(rep.results)
        time.sleep(2.0)
        before = (len(rep.results) - n0) / (time.monotonic() - t0)  # parts/s before the flood
        t1, n1 = time.monotonic(), len(rep.results)
        refused = 0
        for _ in range(1100):
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                refused += 1
        scraped: list[str] = []

        def dropped_1000() -> bool:  # the server drops the flood's connections as it accepts them: poll /metrics
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
                assert r.status == 200
                scraped.append(r.read().decode())
            dropped = re.search(r"^inspectd_plc_connections_dropped(?:_total)? (\S+)$", scraped[-1], re.M)
            return dropped is not None and float(dropped[1]) >= 1000

        wait_until(dropped_1000, 30, "1000 dropped connections counted on /metrics", every=0.5,
                   detail=lambda: scraped[-1][-2000:])
        assert "inspectd_plc_published" in scraped[-1]
        time.sleep(2.0)  # the flood's connections stay open meanwhile
        during = (len(rep.results) - n1) / (time.monotonic() - t1)
        sim.stop.set()
        runner.join(30)
        io.close()
        # the PLC's own session was never dropped; only the part in flight when the sim stopped may lack a result
        assert set(rep.missing) <= {rep.triggered[-1]} and rep.io_errors == 0
        assert during >= 0.25 * before, (before, during)  # was 45 -> 1 part/s before the cap
        assert len(flood) + refused == 1100
    finally:
        for s in flood:
            s.close()
        if sim is not None:
            sim.stop.set()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        stop(daemon)
    text = log.read_text()
    assert "Traceback" not in text
    assert 1 <= text.count("plc_modbus_connection_dropped") <= 3  # 1000+ drops, logged once per 10 s with a count
    assert text.count("plc_client_connected") <= 4  # 1100 connects: the first, then once per 10 s with a count
    print(f"flood: {before:.1f} parts/s before, {during:.1f} during; {len(flood)} connections opened, "
          f"{refused} refused")


@pytest.mark.slow
def test_vision_heartbeat_stops_while_a_stage_is_hung_then_safe_state(tmp_path: Path) -> None:
    """The real daemon with a backend whose inference hangs on demand (tests.test_supervise_stall's launcher):
    while the stage is hung and the process still runs, VISION_HEARTBEAT stands still (it used to keep counting
    on the link's own timer); the stall exit then leaves the safe state for the PLC."""
    port = free_port()
    station = write_station(tmp_path, {"type": "modbus_server", "port": port, "linger_ms": 1000})
    data = yaml.safe_load(station.read_text())
    data["watchdog"] = {"stall_s": 12.0}  # a wide window between "not flowing" (1 s) and the stall exit
    station.write_text(yaml.safe_dump(data))
    hang = tmp_path / "hang"
    log = tmp_path / "daemon.log"
    launcher = [sys.executable, "-m", "tests.test_supervise_stall", "run", "--config", str(station)]
    with log.open("ab") as out:
        daemon = subprocess.Popen(launcher, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                  env={**os.environ, "INSPECTD_TEST_HANG_FILE": str(hang)})
    c = None
    try:
        wait_port(port, 60)
        io = ModbusPlcIO("127.0.0.1", port, LayoutConfig())
        rep = PlcSim(io).run(10, timeout_s=60)
        assert len(rep.triggered) == 10 and not rep.missing, log.read_text()[-3000:]
        c = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        assert c.connect()

        def hb() -> int:
            return LAYOUT.decode_b(c.read_holding_registers(100, count=20, device_id=1).registers).vision_heartbeat

        first = hb()
        time.sleep(0.6)
        assert hb() != first  # parts flowing (idle line polling): it counts
        hang.touch()
        sim = PlcSim(io, first_part=100)
        runner = threading.Thread(target=sim.run, args=(3,), kwargs={"timeout_s": 8}, daemon=True)
        runner.start()  # the next trigger's part hangs in infer
        time.sleep(3.0)  # past flow_s (1 s): the pipeline is not flowing
        still = hb()
        time.sleep(5 * 0.2)  # the PLC-side timeout: 5 heartbeat periods
        assert daemon.poll() is None, "the daemon exited before the window"
        assert hb() == still, "VISION_HEARTBEAT counted while a stage was hung"
        sim.stop.set()
        runner.join(10)
        io.close()
        end, b = time.monotonic() + 30, None
        while time.monotonic() < end:  # the stall exit writes the safe state and serves it linger_ms
            rr = c.read_holding_registers(100, count=20, device_id=1)
            if rr.isError():
                break
            b = LAYOUT.decode_b(rr.registers)
            if b.error_code == ErrorCode.SHUTDOWN:
                break
            time.sleep(0.02)
        assert b is not None and b.error_code == ErrorCode.SHUTDOWN and not b.ready and not b.online
        assert daemon.wait(30) == 70  # ExitCode.STALL
    finally:
        if c is not None:
            c.close()
        stop(daemon)


@pytest.mark.slow
def test_client_mode_failed_start_leaves_shutdown_in_the_plc(tmp_path: Path) -> None:
    """A start that fails after the link is up (a model that does not load: exit 3) still ends in the defined
    STOPPED state in the PLC's memory, not in STARTING or a dead process's leftovers."""
    port = free_port()
    peer = lmb_server(port).start()
    mem = _Memory("modbus_client", port)
    station = write_station(tmp_path, mem.plc())
    products = tmp_path / "products"
    products.mkdir()
    for f in (REPO / "configs/demo/products").glob("*.yaml"):
        p = yaml.safe_load(f.read_text())
        p["model"]["path"] = str(tmp_path / "broken.onnx")
        (products / f.name).write_text(yaml.safe_dump(p))
    (tmp_path / "broken.onnx").write_bytes(b"not an ONNX model")
    data = yaml.safe_load(station.read_text())
    data["products_dir"] = str(products)
    station.write_text(yaml.safe_dump(data))
    log = tmp_path / "daemon.log"
    try:
        mem.write_b(VisionOutputs(ready=True, online=True, vision_heartbeat=9))
        daemon = start_daemon(station, log)
        assert daemon.wait(60) == 3, log.read_text()[-3000:]  # ExitCode.MODEL
        b = mem.read_b()
        assert (b.ready, b.online, b.error, b.error_code, b.run_epoch) == (False, False, True, ErrorCode.SHUTDOWN, 1)
    finally:
        mem.io.close()
        peer.stop()
