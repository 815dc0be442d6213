"""Stopping, as the PLC sees it (README "PLC contract"), with the real daemon process and real PLC peers:

- SIGTERM under load: READY and TRIGGER_ACK end at once, every acknowledged trigger still gets its result,
  which the PLC latches and acknowledges before the safe state; each has its journal row.
- kill -9 in the client modes (libmodbus server, native Snap7 server as the PLC): block B freezes as last
  written -- STATUS may still say READY/ONLINE -- and only VISION_HEARTBEAT tells: it stops counting.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inspectd.plc.config import LayoutConfig
from inspectd.plc.layout import ErrorCode, Layout, VisionOutputs
from tests.onnx_models import slow_model
from tests.plc.faults import scanning
from tests.plc.peers import Peer, free_port, lmb_server, s7_server, wait_port
from tests.test_plc_contract import WatchedIO, plc_station
from tests.waiting import wait_until
from tools.plc_sim import ModbusPlcIO, PlcIO, PlcSim, S7PlcIO

S7_LAYOUT = LayoutConfig(block_a=0, block_b=10)


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    inspectd = Path(sys.executable).with_name("inspectd")
    return subprocess.Popen([str(inspectd), "run", "--config", str(config)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def transport(kind: str, tmp_path: Path) -> tuple[dict, Callable[[], PlcIO], LayoutConfig, Peer | None, int]:
    """(plc section, PLC program's register access, layout, peer process, port) for one transport."""
    port = free_port()
    if kind == "modbus_server":
        return ({"type": "modbus_server", "port": port, "handshake": {"plc_heartbeat_ms": 0}},
                lambda: ModbusPlcIO("127.0.0.1", port, LayoutConfig()), LayoutConfig(), None, port)
    if kind == "modbus_client":
        peer = lmb_server(port).start()
        return ({"type": "modbus_client", "host": "127.0.0.1", "port": port, "poll_ms": 2,
                 "handshake": {"plc_heartbeat_ms": 0}},
                lambda: ModbusPlcIO("127.0.0.1", port, LayoutConfig()), LayoutConfig(), peer, port)
    peer = s7_server(port, native=True).start()
    return ({"type": "s7", "host": "127.0.0.1", "port": port, "db": 100, "poll_ms": 2,
             "handshake": {"plc_heartbeat_ms": 0}},
            lambda: S7PlcIO("127.0.0.1", port, S7_LAYOUT), S7_LAYOUT, peer, port)


@dataclass(frozen=True)
class Station:
    daemon: subprocess.Popen[bytes]
    log: Path
    make_io: Callable[[], PlcIO]
    layout: LayoutConfig
    port: int


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Callable[[str, int], Station]]:
    """station(kind, matmuls): the daemon with a slow model (`matmuls`) on `kind`'s PLC peer. After the test the
    daemon is killed if it still runs, then the peer is stopped."""
    started: list[tuple[subprocess.Popen[bytes], Peer | None]] = []

    def start(kind: str, matmuls: int) -> Station:
        plc, make_io, layout, peer, port = transport(kind, tmp_path)
        config, _ = plc_station(tmp_path, budget_ms=1000, model=slow_model(tmp_path / "slow.onnx", matmuls=matmuls),
                                plc=plc)
        log = tmp_path / "daemon.log"
        daemon = start_daemon(config, log)
        started.append((daemon, peer))
        return Station(daemon, log, make_io, layout, port)

    yield start
    for daemon, peer in started:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(5)
        if peer is not None:
            peer.stop()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["modbus_server", "s7"])
def test_sigterm_under_load_owes_no_result(tmp_path: Path, kind: str,
                                           station: Callable[[str, int], Station]) -> None:
    st = station(kind, 10)
    daemon, log = st.daemon, st.log
    if kind == "modbus_server":
        wait_port(st.port, 60)
    io = WatchedIO(st.make_io(), st.layout)
    sim = PlcSim(io, st.layout, seed=11)
    with scanning(sim):
        wait_until(lambda: len(sim.report.results) >= 30, 90, "30 results at the PLC",
                   detail=lambda: log.read_text()[-3000:])
        daemon.send_signal(signal.SIGTERM)  # under load: parts in flight, triggers queued, results buffered
        assert daemon.wait(30) == 0, log.read_text()[-3000:]
        time.sleep(0.5)  # the PLC's scans after the daemon went away change nothing
    rep, seen = sim.report, io.seen
    assert len(seen.acked) >= 30
    owed = [pid for pid in seen.acked if pid not in rep.results]
    assert not owed, f"acknowledged triggers whose result the PLC never latched: {owed}"
    assert rep.order == seen.acked, "results not in trigger order"
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = {pid: (bool(ok), code) for pid, ok, code in
                db.execute("SELECT part_id, plc_ok, result_code FROM verdicts WHERE reason != 'not_ready'")}
    assert rows == {pid: rep.results[pid] for pid in seen.acked}, "journal and PLC disagree"
    text = log.read_text()
    assert "plc_results_unacknowledged_at_stop" not in text
    assert ErrorCode.SHUTDOWN in seen.error_codes  # READY dropped with ERROR_CODE 7 while draining


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["modbus_client", "s7"])
def test_kill9_freezes_block_b_and_its_heartbeat(kind: str, station: Callable[[str, int], Station]) -> None:
    st = station(kind, 2)
    daemon, log, layout = st.daemon, st.log, st.layout
    lay = Layout(layout)
    io = st.make_io()

    def read() -> VisionOutputs:
        return lay.decode_b(io.read_b())

    try:
        sim = PlcSim(io, layout, seed=12)
        rep = sim.run(20, timeout_s=90)
        assert len(rep.results) == 20 and not rep.missing, log.read_text()[-3000:]
        before = read()
        time.sleep(1.0)
        alive = read()
        assert alive.vision_heartbeat != before.vision_heartbeat  # counting while the daemon lives
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        frozen = read()
        samples = []
        for _ in range(8):  # 1.6 s = 8 heartbeat periods (heartbeat_ms 200)
            time.sleep(0.2)
            samples.append(read())
    finally:
        io.close()
    # what a PLC then sees: the last block B, unchanged -- still ONLINE and READY, no ERROR -- and a heartbeat
    # that no longer moves. Its own watchdog on VISION_HEARTBEAT is the only way to notice.
    assert all(s == frozen for s in samples)
    assert frozen.online and frozen.ready and not frozen.error
