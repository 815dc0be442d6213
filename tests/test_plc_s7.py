"""S7 client mode against the native Snap7 server (python-snap7 2.0.2's libsnap7, own venv) and 3.3's Python one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import snap7
from snap7.util import get_bool, get_dint, get_word, set_bool

from inspectd.plc.config import HandshakeConfig, LayoutConfig, S7Config
from inspectd.plc.link import TransportLink
from tests.plc.faults import run_through
from tests.plc.links import started_link
from tests.plc.peers import Capture, Peer, free_port, s7_server
from tests.waiting import wait_until
from tools.plc_sim import REJ_REFUSED, REJ_VISION_LOST, PlcSim, Responder, S7PlcIO

S7_LAYOUT = LayoutConfig(block_a=0, block_b=10)  # the S7Config default: DBB0..19 and DBB20..59


@pytest.fixture(params=["native", "python"])
def plc(request: pytest.FixtureRequest) -> Iterator[Peer]:
    peer = s7_server(free_port(), native=request.param == "native").start()
    yield peer
    peer.stop()


@pytest.fixture
def native_plc() -> Iterator[Peer]:
    peer = s7_server(free_port(), native=True).start()
    yield peer
    peer.stop()


def _link(port: int, recipes: set[int] | None = None) -> TransportLink:
    cfg = S7Config(type="s7", host="127.0.0.1", port=port, db=100, poll_ms=2, timeout_ms=300, backoff_max_ms=400,
                   handshake=HandshakeConfig(plc_heartbeat_ms=0))
    link = started_link(cfg, on_recipe=lambda n: n in (recipes or set()))
    link.set_ready(True)
    return link


def test_handshake(plc: Peer) -> None:
    link = _link(plc.port, recipes={12})
    resp = Responder(link, seed=3).start()
    io = S7PlcIO("127.0.0.1", plc.port, S7_LAYOUT)
    try:
        rep = PlcSim(io, S7_LAYOUT, seed=3, ack_delay_s=(0, 0.003), recipes={30: 12}).run(120, timeout_s=60)
    finally:
        io.close()
        resp.stop()
        link.stop()
    assert len(rep.triggered) == 120 and not rep.missing and rep.recipe == {12: True}
    assert all(rep.results[p] == resp.sent[p] for p in rep.triggered)
    assert rep.seq_gaps == 0 and link.stats.write_errors == 0


def _wait(pred: Callable[[], object], timeout: float = 3.0) -> None:
    wait_until(pred, timeout, every=0.005)


def test_plc_program_with_bit_access_and_the_wire(native_plc: Peer, tmp_path: Path) -> None:
    """A PLC program addressing single bits (DBX) on the native server; tshark checks `Write Var` of DB100."""
    cap = Capture(native_plc.port, tmp_path).start()
    link = _link(native_plc.port)
    resp = Responder(link, seed=1, reject_rate=1.0).start()
    c = snap7.Client()
    c.connect("127.0.0.1", 0, 1, tcp_port=native_plc.port)
    try:
        a = bytearray(10)
        set_bool(a, 1, 0, True)  # CONTROL bit 0 TRIGGER_ENABLE = DBX1.0 (low byte of the big-endian word)
        a[4:8] = (123456789).to_bytes(4, "big")  # PART_ID as DINT at DBD4
        c.db_write(100, 0, a)
        _wait(lambda: get_bool(c.db_read(100, 20, 2), 1, 0))  # READY = DBX21.0
        c.write_area(snap7.Area.DB, 100, 1 * 8 + 1, bytearray([1]), snap7.WordLen.Bit)  # TRIGGER: DBX1.1 bit write
        _wait(lambda: get_bool(c.db_read(100, 20, 40), 1, 3))  # RESULT_VALID = DBX21.3
        b = c.db_read(100, 20, 40)
        assert get_bool(b, 1, 5) and not get_bool(b, 1, 4) and get_bool(b, 0, 1)  # NG, not OK, ONLINE (DBX20.1)
        assert get_dint(b, 4) == 123456789 and get_word(b, 8) == 1  # RESULT_PART_ID at DBD24, RESULT_SEQ
        assert get_word(b, 10) == resp.sent[123456789][1]  # RESULT_CODE at DBW30
    finally:
        c.disconnect()
        resp.stop()
        link.stop()
        cap.stop()
    rows = cap.fields(["-d", f"tcp.port=={native_plc.port},tpkt"], "s7comm.header.rosctr == 1",
                      ["s7comm.param.func", "s7comm.param.item.db", "s7comm.param.item.address.byte",
                       "s7comm.param.item.transp_size", "s7comm.param.item.length"])
    writes = [r for r in rows if r["s7comm.param.func"] == "0x05"]
    daemon = [r for r in writes if r["s7comm.param.item.address.byte"] == "20"]
    assert daemon and all(r["s7comm.param.item.db"] == "100" and r["s7comm.param.item.length"] == "40"
                          for r in daemon)  # Write Var DB100, 40 bytes at DBB20: block B whole, every time
    assert any(r["s7comm.param.item.address.byte"] == "1" and r["s7comm.param.item.transp_size"] == "1"
               for r in writes)  # the PLC program's own BIT write (DBX1.1), decoded as such


def test_frozen_and_killed_s7_plc(native_plc: Peer) -> None:
    """snap7's fixed 5 s timeout does not leak through: the link gives up after 300 ms and reconnects."""
    link = _link(native_plc.port)
    resp = Responder(link, seed=2).start()
    io = S7PlcIO("127.0.0.1", native_plc.port, S7_LAYOUT)
    sim = PlcSim(io, S7_LAYOUT, seed=2)
    worst: list[float] = []

    def faults() -> None:
        _wait(lambda: len(sim.report.triggered) >= 30, 30)
        native_plc.freeze()
        t0 = time.perf_counter()
        link.submit(resp.verdict(7_000_001, time.monotonic()), None)
        worst.append(time.perf_counter() - t0)
        _wait(lambda: link.stats.write_errors >= 1, 3)
        native_plc.thaw()
        _wait(lambda: len(sim.report.triggered) >= 60, 30)
        native_plc.kill()
        time.sleep(0.3)
        native_plc.start()

    rep = run_through(sim, 90, faults, io.close, resp.stop, link.stop, join_s=20)
    assert max(worst) < 0.05 and link.stats.write_errors >= 1  # not snap7's 5 s, not our 300 ms
    assert len(rep.triggered) == 90
    flagged = set(link.stats.dropped_part_ids)
    # the PLC program rejects a part whose trigger the vision system could not acknowledge (PLC memory restarted:
    # ONLINE off, the vision system counts as lost)
    flagged |= {p for p, (_, code) in rep.verdicts.items() if code in (REJ_REFUSED, REJ_VISION_LOST)}
    assert all(rep.results.get(p) == resp.sent.get(p) or p in flagged for p in rep.triggered)
