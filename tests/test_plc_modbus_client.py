"""Modbus client mode: a libmodbus server (C, Debian's libmodbus) and pymodbus' own server play the PLC's MB_SERVER;
the libmodbus one is killed and frozen mid-run. A black-hole PLC (SYNs dropped) bounds the connect."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inspectd.plc.config import HandshakeConfig, LayoutConfig, ModbusClientConfig
from inspectd.plc.link import TransportLink
from tests.plc.faults import run_through
from tests.plc.links import started_link
from tests.plc.peers import Capture, Peer, free_port, lmb_server, pymodbus_server
from tests.waiting import wait_until
from tools.plc_sim import REJ_REFUSED, REJ_VISION_LOST, ModbusPlcIO, PlcSim, Responder


@pytest.fixture
def plc() -> Iterator[Peer]:
    peer = lmb_server(free_port()).start()
    yield peer
    peer.stop()


@pytest.fixture(params=["libmodbus", "pymodbus"])
def any_plc(request: pytest.FixtureRequest) -> Iterator[Peer]:
    port = free_port()
    peer = (lmb_server(port) if request.param == "libmodbus" else pymodbus_server(port)).start()
    yield peer
    peer.stop()


def _link(port: int, recipes: set[int] | None = None) -> TransportLink:
    cfg = ModbusClientConfig(type="modbus_client", host="127.0.0.1", port=port, poll_ms=2, timeout_ms=250,
                             backoff_max_ms=400, handshake=HandshakeConfig(plc_heartbeat_ms=0))
    link = started_link(cfg, on_recipe=lambda n: n in (recipes or set()))
    link.set_ready(True)
    return link


def _wait(pred: Callable[[], object], timeout: float) -> None:
    wait_until(pred, timeout, every=0.005)


def _check(rep, resp: Responder, link: TransportLink) -> None:  # type: ignore[no-untyped-def]
    """Every triggered part's result reached the PLC with its own verdict, or the link flagged it."""
    flagged = set(link.stats.dropped_part_ids)
    # parts the PLC program rejected itself before an acknowledgement (trigger refused, vision system lost)
    refused = {p for p, (_, code) in rep.verdicts.items() if code in (REJ_REFUSED, REJ_VISION_LOST)}
    for pid in rep.triggered:
        if pid in rep.results:
            assert rep.results[pid] == resp.sent[pid], pid
        else:
            assert pid in flagged | refused, f"part {pid}: no result at the PLC and not flagged"


def test_handshake_and_wire(any_plc: Peer, tmp_path: Path) -> None:
    plc = any_plc
    cap = Capture(plc.port, tmp_path).start()
    link = _link(plc.port, recipes={3})
    resp = Responder(link, seed=4).start()
    io = ModbusPlcIO("127.0.0.1", plc.port, LayoutConfig())
    try:
        rep = PlcSim(io, seed=4, ack_delay_s=(0, 0.004), recipes={40: 3}).run(150, timeout_s=60)
    finally:
        io.close()
        resp.stop()
        link.stop()
        cap.stop()
    assert len(rep.triggered) == 150 and not rep.missing and rep.recipe == {3: True}
    _check(rep, resp, link)
    assert rep.seq_gaps == 0 and link.stats.write_errors == 0 and link.stats.reconnects == 0
    rows = cap.fields(["-o", f"mbtcp.tcp.port:{plc.port}"], f"modbus && tcp.dstport == {plc.port}",
                      ["modbus.func_code", "modbus.reference_num", "modbus.word_cnt", "modbus.regval_uint16"])
    writes_b = [r for r in rows if r["modbus.func_code"] == "16" and r["modbus.reference_num"] == "100"]
    assert writes_b and all(r["modbus.word_cnt"] == "20" for r in writes_b)  # block B always whole
    last = [int(v) for v in writes_b[-1]["modbus.regval_uint16"].split(",")]
    assert last[0] & (1 << 6) and last[6] == 7  # the safe state: ERROR, ERROR_CODE 7 (shutdown)
    assert {r["modbus.func_code"] for r in rows} <= {"3", "16"}  # never coils (FC05/FC15) into a PLC


def test_plc_killed_and_restarted_mid_run(plc: Peer) -> None:
    """SIGKILL the PLC's server at part 60, restart it 0.5 s later: the link reconnects and rewrites block B."""
    link = _link(plc.port)
    resp = Responder(link, seed=6).start()
    io = ModbusPlcIO("127.0.0.1", plc.port, LayoutConfig(), timeout=0.3)
    sim = PlcSim(io, seed=6, ack_delay_s=(0, 0.002))

    def kill() -> None:
        _wait(lambda: len(sim.report.triggered) >= 60, 30)
        plc.kill()
        time.sleep(0.5)
        plc.start()

    rep = run_through(sim, 200, kill, io.close, resp.stop, link.stop)
    assert len(rep.triggered) == 200 and rep.io_errors >= 1
    assert link.stats.reconnects + link.stats.connect_failures >= 1
    _check(rep, resp, link)
    assert len(rep.results) >= 195  # at most the part in flight at the kill may be lost, and then it is flagged
    # a submit that waited on the PLC would take the 250 ms timeout; a busy 2-core box may hold the GIL for tens of ms
    assert resp.max_submit_s < 0.2


def test_frozen_plc_costs_a_reconnect_not_a_stalled_pipeline(plc: Peer) -> None:
    """SIGSTOP: TCP still connects, nothing answers. submit() stays instant; buffered results arrive after SIGCONT."""
    link = _link(plc.port)
    resp = Responder(link, seed=8).start()
    io = ModbusPlcIO("127.0.0.1", plc.port, LayoutConfig(), timeout=0.3)
    sim = PlcSim(io, seed=8)
    extra = [8_000_001, 8_000_002, 8_000_003]
    worst: list[float] = []

    def freeze() -> None:
        _wait(lambda: len(sim.report.triggered) >= 40, 30)
        plc.freeze()
        for pid in extra:  # parts the pipeline finishes while the PLC is frozen (hardware-triggered)
            t0 = time.perf_counter()
            link.submit(resp.verdict(pid, time.monotonic()), None)
            link.set_ready(True)
            worst.append(time.perf_counter() - t0)
            time.sleep(0.3)
        time.sleep(0.5)
        plc.thaw()

    rep = run_through(sim, 120, freeze, io.close, resp.stop, link.stop)
    assert max(worst) < 0.05, worst  # not the 250 ms request timeout, let alone pymodbus' 12 s
    assert link.stats.write_errors >= 1  # the request that timed out (250 ms), then a reconnect
    assert len(rep.triggered) == 120 and not rep.missing
    _check(rep, resp, link)
    assert all(pid in rep.results for pid in extra)  # buffered through the freeze, then shown


def test_black_hole_plc_bounded_connects_and_stop() -> None:
    """A PLC whose accept queue is full drops our SYNs: each connect gives up after timeout_ms, backoff is capped."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped and connect() hangs
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    t_start = time.monotonic()
    link = _link(port)
    try:
        t0 = time.perf_counter()
        link.submit(Responder(link).verdict(1, time.monotonic()), None)
        assert time.perf_counter() - t0 < 0.2  # not one 250 ms connect timeout
        _wait(lambda: link.stats.connect_failures >= 3, 3.0)
        assert 0.7 < time.monotonic() - t_start < 6.0  # 3 x 250 ms timeouts + 50/100 ms backoff, not 3 x 3 s
        assert not link.connected
    finally:
        t0 = time.perf_counter()
        link.stop()
        stop_s = time.perf_counter() - t0
        for f in fillers:
            f.close()
        hole.close()
    assert stop_s < 2.5  # the safe-state attempt is one more bounded (250 ms) connect, not a hang


@pytest.mark.parametrize("kind", ["libmodbus", "s7_native"])
def test_a_running_line_is_polled_fast_an_idle_one_slowly(kind: str) -> None:
    """poll_ms 1000 (idle) and fast_poll_ms 2: once the line runs, each handshake step costs one fast poll, so
    40 parts take about a second more than at poll_ms 2 -- with every step waiting for a 1 s poll they took
    over a minute. Then the idle line goes back to the slow poll (counted reads of block A on the PLC side)."""
    from inspectd.plc.config import S7Config
    from inspectd.plc.layout import Layout, PlcInputs
    from tests.plc.peers import s7_server
    from tools.plc_sim import S7PlcIO

    port = free_port()
    peer = lmb_server(port).start() if kind == "libmodbus" else s7_server(port, native=True).start()
    common = dict(host="127.0.0.1", port=port, poll_ms=1000, fast_poll_ms=2, timeout_ms=250,
                  handshake=HandshakeConfig(plc_heartbeat_ms=0))
    cfg = (ModbusClientConfig(type="modbus_client", **common) if kind == "libmodbus"  # type: ignore[arg-type]
           else S7Config(type="s7", **common))  # type: ignore[arg-type]
    link = started_link(cfg)
    lay = cfg.layout
    reads = [0]
    link.set_ready(True)
    resp = Responder(link, seed=4).start()
    io = S7PlcIO("127.0.0.1", port, lay) if kind == "s7_native" else ModbusPlcIO("127.0.0.1", port, lay)
    try:
        rep = PlcSim(io, lay).run(40, timeout_s=30)
        assert len(rep.triggered) == 40 and not rep.missing, rep.missing
        # the PLC program acknowledges the last result and idles
        io.write_a(Layout(lay).encode_a(PlcInputs(trigger_enable=True, result_ack=True)))
        _wait(lambda: not Layout(lay).decode_b(io.read_b()).result_valid, 5)
        io.write_a(Layout(lay).encode_a(PlcInputs(trigger_enable=True)))
        time.sleep(1.2)  # LINE_RUNNING_S after the last trigger: the line counts as idle from here on
        transport = link._transport
        assert transport is not None
        read_a = transport.read_a

        async def counting() -> list[int]:
            reads[0] += 1
            return await read_a()

        transport.read_a = counting  # type: ignore[method-assign]
        time.sleep(2.5)  # idle: one read per poll_ms (1 s)
        assert 1 <= reads[0] <= 5, reads[0]
    finally:
        io.close()
        resp.stop()
        link.stop()
        peer.stop()
