"""Modbus server mode against PLCs the project did not write: pymodbus' own client and Debian's mbpoll."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from inspectd.plc.config import HandshakeConfig, LayoutConfig, ModbusServerConfig
from inspectd.plc.layout import ErrorCode, Layout, PlcInputs
from inspectd.plc.link import TransportLink
from inspectd.plc.registry import make_plc_link
from tests.plc.links import started_link
from tests.plc.peers import Capture, free_port, wait_port
from tests.waiting import wait_until
from tools.plc_sim import ModbusPlcIO, PlcSim, Responder

LAY = Layout()


class Recipes:
    def __init__(self, known: set[int]) -> None:
        self.known, self.asked = known, []
        self.missed: list[int] = []  # part ids of triggers refused while not READY (on_missed)

    def __call__(self, plc_id: int) -> bool:
        self.asked.append(plc_id)
        return plc_id in self.known


def _server(port: int, server: dict[str, Any] | None = None, **hs: object) -> ModbusServerConfig:
    """Server mode on `port`, lingering 300 ms, no PLC heartbeat watchdog; `server` and `hs` override."""
    return ModbusServerConfig(**{"type": "modbus_server", "port": port, "linger_ms": 300, **(server or {})},
                              handshake=HandshakeConfig(**{"plc_heartbeat_ms": 0, **hs}))


def _started(cfg: ModbusServerConfig, **callbacks: Any) -> TransportLink:
    """The link for `cfg` (recipes accepted unless `on_recipe` says otherwise), started and listening; the caller
    stops it."""
    link = started_link(cfg, **callbacks)
    wait_port(cfg.port)
    return link


@pytest.fixture
def served() -> Iterator[tuple[TransportLink, int, Recipes]]:
    port = free_port()
    recipes = Recipes({7})
    link = _started(_server(port), on_recipe=recipes, on_missed=lambda pid, why: recipes.missed.append(pid))
    yield link, port, recipes
    link.stop()


def _plc(port: int) -> ModbusTcpClient:
    c = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    assert c.connect()
    return c


def _read_b(c: ModbusTcpClient):  # -> VisionOutputs
    return LAY.decode_b(c.read_holding_registers(100, count=20, device_id=1).registers)


def _wait(pred: Callable[[], object], timeout: float = 2.0) -> None:
    wait_until(pred, timeout, every=0.002)


def test_safe_state_at_start_ready_when_healthy_and_safe_state_on_stop() -> None:
    port = free_port()
    link = _started(_server(port))
    c = _plc(port)
    c.write_registers(0, LAY.encode_a(PlcInputs(trigger_enable=True)), device_id=1)
    time.sleep(0.05)
    b = _read_b(c)
    assert (b.ready, b.result_valid, b.online) == (False, False, True)  # not healthy yet
    link.set_ready(True)
    _wait(lambda: _read_b(c).ready)
    link.set_ready(False, ErrorCode.CAMERA)
    _wait(lambda: _read_b(c).error_code == ErrorCode.CAMERA and not _read_b(c).ready)
    link.set_ready(True)
    stopper = threading.Thread(target=link.stop)
    stopper.start()  # the server lingers 300 ms with the safe state for a polling PLC to see
    _wait(lambda: _read_b(c).error)
    b = _read_b(c)
    assert (b.ready, b.result_valid, b.online, b.error_code) == (False, False, False, ErrorCode.SHUTDOWN)
    stopper.join(3)
    assert not stopper.is_alive()
    c.close()


def test_thousand_parts_random_verdicts_recipe_ack_delays_and_overrun(served) -> None:  # type: ignore[no-untyped-def]
    """pymodbus' client plays the PLC for 1000 parts; mid-run results pile up unacknowledged and overrun."""
    link, port, recipes = served
    link.set_ready(True)
    resp = Responder(link, seed=5, reject_rate=0.3).start()
    io = ModbusPlcIO("127.0.0.1", port, LayoutConfig())
    sim = PlcSim(io, seed=9, ack_delay_s=(0.0, 0.003), recipes={300: 7, 600: 9}, scan_s=0.0005)
    extra = list(range(9_000_001, 9_000_011))  # hardware-triggered parts the PLC did not trigger: not gated

    def overrun() -> None:
        _wait(lambda: len(sim.report.triggered) >= 500, 60)
        sim.pause_ack.set()
        for pid in extra:
            link.submit(resp.verdict(pid, time.monotonic()), None)
        _wait(lambda: link.stats.overruns > 0, 5)
        time.sleep(0.05)
        sim.pause_ack.clear()

    t = threading.Thread(target=overrun)
    t.start()
    rep = sim.run(1000, timeout_s=150)
    t.join(10)
    resp.stop()
    io.close()
    # flagged: dropped with OVERRUN, or refused with MISSED_TRIGGER (a trigger racing the unsolicited verdicts
    # that filled the buffer; the daemon journals those as fail-safe through on_missed)
    dropped, missed = set(link.stats.dropped_part_ids), set(recipes.missed)
    assert len(rep.triggered) == 1000 and set(rep.missing) <= dropped | missed, rep.missing[:20]
    assert len(missed) == link.stats.missed_triggers == rep.missed_seen <= 1
    for pid in rep.triggered:  # every part got its own verdict (part id echo, OK/NG, code) or was flagged
        assert rep.results.get(pid) == resp.sent.get(pid) or pid in dropped | missed
    # a PLC-triggered part is only dropped when its verdict came after the unsolicited ones filled the buffer
    assert dropped & set(extra) and len(dropped - set(extra)) <= 8
    assert all(pid in rep.results or pid in dropped for pid in extra)
    assert link.stats.overruns == len(dropped) and rep.overrun_seen >= 1
    assert rep.order == sorted(rep.order, key=lambda p: resp.t_ready[p])  # FIFO: verdict order kept
    assert rep.seq_gaps == 0
    assert recipes.asked == [7, 9] and rep.recipe == {7: True, 9: False}
    assert link.stats.published == len(rep.order)


def test_plc_heartbeat_watchdog_and_missed_trigger() -> None:
    port = free_port()
    missed: list[tuple[int, str]] = []
    link = _started(_server(port, plc_heartbeat_ms=50), on_missed=lambda pid, why: missed.append((pid, why)))
    link.set_ready(True)
    c = _plc(port)
    try:
        c.write_registers(0, LAY.encode_a(PlcInputs(plc_heartbeat=1)), device_id=1)
        _wait(lambda: _read_b(c).error_code == ErrorCode.PLC_COMM_LOST, 1.0)  # 3 x 50 ms without change
        assert link.stats.comm_lost == 1 and _read_b(c).error
        c.write_registers(0, LAY.encode_a(PlcInputs(plc_heartbeat=2)), device_id=1)
        time.sleep(0.02)
        assert _read_b(c).error  # latched until CLEAR_ERROR
        c.write_registers(0, LAY.encode_a(PlcInputs(plc_heartbeat=3, clear_error=True)), device_id=1)
        _wait(lambda: not _read_b(c).error)
        # TRIGGER without TRIGGER_ENABLE: not READY -> MISSED_TRIGGER, counted and reported
        c.write_registers(0, LAY.encode_a(PlcInputs(plc_heartbeat=4, trigger=True, part_id=77)), device_id=1)
        _wait(lambda: _read_b(c).missed_trigger)
        assert missed == [(77, "trigger_not_enabled")] and link.stats.missed_triggers == 1
        assert link.next_trigger(0.05) is None
    finally:
        c.close()
        link.stop()


def test_block_ownership_and_allow_list(served) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = served
    c = _plc(port)
    assert c.write_registers(100, [1], device_id=1).isError()  # block B belongs to the daemon
    assert c.write_registers(8, [1, 2, 3], device_id=1).isError()  # runs past the end of block A
    assert c.write_coils(0, [True], device_id=1).isError()  # coils are not part of the interface
    assert not c.read_holding_registers(0, count=10, device_id=1).isError()
    c.close()
    port2 = free_port()
    guarded = make_plc_link(ModbusServerConfig(type="modbus_server", port=port2, allow=["127.0.0.2"], linger_ms=0),
                            on_recipe=lambda n: True)
    guarded.start()
    try:
        wait_port(port2)
        c2 = ModbusTcpClient("127.0.0.1", port=port2, timeout=0.5, retries=0)
        with pytest.raises(Exception):  # noqa: B017 - pymodbus raises ConnectionException or ModbusIOException
            c2.read_holding_registers(100, count=20, device_id=1)
        c2.close()
        assert guarded._transport.rejected >= 1  # type: ignore[union-attr]
        assert not guarded.connected
    finally:
        guarded.stop()


def _mbpoll(port: int, *args: str) -> str:
    r = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1", "-o", "1", *args],
                       capture_output=True, text=True, timeout=10)
    return r.stdout + r.stderr


def _regs(out: str) -> dict[int, int]:
    return {int(m[1]): int(m[2]) for m in re.finditer(r"^\[(\d+)\]:\s+(-?\d+)", out, re.M)}


def _status(port: int) -> int:
    return _regs(_mbpoll(port, "-r", "100", "-t", "4", "127.0.0.1")).get(100, 0)


@pytest.mark.skipif(not shutil.which("mbpoll"), reason="mbpoll missing (tools/ci-deps.sh installs it)")
def test_mbpoll_plays_the_plc_and_tshark_sees_the_registers(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Debian's mbpoll (libmodbus) triggers part 70000 (a 32-bit id), reads the result; tshark checks the wire."""
    link, port, _ = served
    link.set_ready(True)
    resp = Responder(link, seed=1, reject_rate=1.0).start()  # every part NG with a code 1..5
    cap = Capture(port, tmp_path).start()
    try:
        hi, lo = divmod(70000, 0x10000)
        out = _mbpoll(port, "-r", "0", "-t", "4", "127.0.0.1", "1", "1", str(hi), str(lo), "3")  # ENABLE, hb, id
        assert "Written 5 references" in out, out
        _wait(lambda: _status(port) & 1, 3)  # READY
        assert "Written 1 references" in _mbpoll(port, "-r", "0", "-t", "4", "127.0.0.1", "3")  # TRIGGER
        _wait(lambda: _status(port) & (1 << 3), 3)  # RESULT_VALID
        out = _mbpoll(port, "-r", "100", "-c", "12", "-t", "4", "127.0.0.1")
        regs = _regs(out)
        assert regs[102] * 0x10000 + regs[103] == 70000 and regs[104] >= 1  # part id echo, RESULT_SEQ
        assert regs[100] & (1 << 5) and not regs[100] & (1 << 4) and regs[105] == resp.sent[70000][1]
        assert "Illegal data address" in _mbpoll(port, "-r", "100", "-t", "4", "127.0.0.1", "5")
        assert _regs(_mbpoll(port, "-r", "102", "-t", "4:int", "-B", "127.0.0.1"))[102] == 70000  # int32, words BE
    finally:
        cap.stop()
        resp.stop()
    rows = cap.fields(["-o", f"mbtcp.tcp.port:{port}"], "modbus",
                      ["tcp.srcport", "modbus.func_code", "modbus.reference_num", "modbus.word_cnt",
                       "modbus.regval_uint16", "modbus.exception_code"])
    queries = [r for r in rows if r["tcp.srcport"] != str(port)]
    answers = [r for r in rows if r["tcp.srcport"] == str(port)]
    assert {"func_code": "16", "ref": "0", "values": f"1,1,{hi},{lo},3"} in [
        {"func_code": r["modbus.func_code"], "ref": r["modbus.reference_num"], "values": r["modbus.regval_uint16"]}
        for r in queries]
    assert any(r["modbus.func_code"] == "3" and r["modbus.reference_num"] == "100" and r["modbus.word_cnt"] == "12"
               for r in queries)
    status_reads = [r["modbus.regval_uint16"].split(",") for r in answers
                    if r["modbus.func_code"] == "3" and r["modbus.regval_uint16"].count(",") == 11]
    assert any(v[2:4] == [str(hi), str(lo)] for v in status_reads)  # RESULT_PART_ID on the wire
    assert any(r["modbus.exception_code"] == "2" for r in answers)  # the refused write into block B


def test_station_specific_layout_and_any_unit_id() -> None:
    """Blocks moved to HR 200/300, little word order, unit id 0 (answer any): the simulated PLC, configured
    the same way, runs parts; the default addresses are not served."""
    port = free_port()
    lay = LayoutConfig(block_a=200, block_b=300, word_order="little")
    link = _started(_server(port, {"unit_id": 0, "layout": lay, "linger_ms": 0}))
    link.set_ready(True)
    resp = Responder(link, seed=11).start()
    io = ModbusPlcIO("127.0.0.1", port, lay, unit=17)
    try:
        rep = PlcSim(io, lay, first_part=0x12345).run(20, timeout_s=30)
        assert not rep.missing and all(rep.results[p] == resp.sent[p] for p in rep.triggered)
        words = io.c.read_holding_registers(302, count=2, device_id=17).registers
        assert words == [(0x12345 + 19) & 0xFFFF, (0x12345 + 19) >> 16]  # RESULT_PART_ID, low word first
        assert io.c.read_holding_registers(100, count=20, device_id=17).isError()
    finally:
        io.close()
        resp.stop()
        link.stop()


@pytest.mark.skipif(not shutil.which("mbpoll"), reason="mbpoll missing (tools/ci-deps.sh installs it)")
def test_unit_ids_configured_plus_0_and_255_others_refused(served) -> None:  # type: ignore[no-untyped-def]
    """pymodbus' client and mbpoll (libmodbus) address unit 1, 0 and 255 (MB_CLIENT's and libmodbus' TCP default);
    unit 17 gets exception 0x0B (gateway target did not respond), counted, not a traceback."""
    link, port, _ = served
    link.set_ready(True)
    c = _plc(port)
    _wait(lambda: not _read_b(c).error)
    try:
        for unit in (1, 0, 255):
            rr = c.read_holding_registers(100, count=20, device_id=unit)
            assert not rr.isError(), (unit, rr)
            b = LAY.decode_b(rr.registers)
            assert b.online and b.error_code == 0 and b.run_epoch
        rr = c.read_holding_registers(100, count=20, device_id=17)
        assert rr.isError() and rr.exception_code == 0x0B
    finally:
        c.close()
    for unit in ("0", "255"):
        out = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(port), "-a", unit, "-0", "-1", "-o", "1", "-r", "100",
                              "-t", "4", "127.0.0.1"], capture_output=True, text=True, timeout=10).stdout
        assert _regs(out).get(100, 0) & (1 << 9), out  # ONLINE read through unit 0 / 255
    assert link._transport.noise.counts["unknown_unit_id"] == 1  # type: ignore[union-attr]


def _mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def _recv_frames(s: socket.socket, n: int, timeout: float = 10.0) -> list[tuple[int, int, bytes]]:
    s.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 7 and len(buf) >= 6 + struct.unpack_from(">H", buf, 4)[0]:
            tid, _, length, unit = struct.unpack_from(">HHHB", buf)
            out.append((tid, unit, buf[7:6 + length]))
            buf = buf[6 + length:]
    return out


def test_hundred_pipelined_requests_on_one_connection_all_answered_in_order(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A master that sends the next request before the answer (100 in one TCP segment): every one answered, in
    order, each with its own transaction id; writes and reads interleaved see each other in order. tshark's
    Modbus/TCP dissector reads the same 100 answers off the wire."""
    _, port, _ = served
    cap = Capture(port, tmp_path).start()
    reqs = []
    for i in range(100):
        if i % 10 == 5:  # FC16 write of PART_ID words, then reads see it
            reqs.append(_mbap(i + 1, 1, struct.pack(">BHHB2H", 16, 2, 2, 4, 0, i)))
        else:
            reqs.append(_mbap(i + 1, 1, struct.pack(">BHH", 3, 2, 2)))
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"".join(reqs))
            frames = _recv_frames(s, 100)
    finally:
        cap.stop()
    assert [f[0] for f in frames] == list(range(1, 101))
    rows = cap.fields(["-o", f"mbtcp.tcp.port:{port}"], "mbtcp", ["tcp.srcport", "mbtcp.trans_id"])
    on_wire = [int(t) for r in rows if r["tcp.srcport"] == str(port) for t in r["mbtcp.trans_id"].split(",")]
    asked = [int(t) for r in rows if r["tcp.srcport"] != str(port) for t in r["mbtcp.trans_id"].split(",")]
    assert asked == list(range(1, 101)) and on_wire == list(range(1, 101))
    last_written = None
    for i, (_, unit, pdu) in enumerate(frames):
        assert unit == 1
        if i % 10 == 5:
            assert pdu == struct.pack(">BHH", 16, 2, 2)
            last_written = i
        else:
            assert pdu[0] == 3 and pdu[1] == 4
            assert struct.unpack(">2H", pdu[2:6]) == (0, last_written if last_written is not None else 0)


def test_protocol_noise_is_counted_and_logged_once_never_a_traceback(served, capsys) -> None:  # type: ignore[no-untyped-def]
    link, port, _ = served
    link.set_ready(True)
    c = _plc(port)
    for _ in range(50):
        assert c.read_holding_registers(100, count=1, device_id=42).isError()
    for _ in range(20):  # garbage: not Modbus TCP (protocol id != 0): the connection is closed
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            assert s.recv(100) == b""
    assert not c.read_holding_registers(100, count=20, device_id=1).isError()  # the PLC is still served
    c.close()
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    assert text.count("plc_modbus_unknown_unit_id") == 1 and text.count("plc_modbus_garbage_frame") == 1
    noise = link._transport.noise.counts  # type: ignore[union-attr]
    assert noise["unknown_unit_id"] == 50 and noise["garbage_frame"] == 20


def test_connection_cap_drops_the_idlest_and_the_active_plc_keeps_its_session() -> None:
    port = free_port()
    link = _started(_server(port, {"linger_ms": 0, "max_connections": 8}))
    link.set_ready(True)
    plc = _plc(port)
    idle: list[socket.socket] = []
    try:
        for i in range(40):
            idle.append(socket.create_connection(("127.0.0.1", port)))
            assert not plc.read_holding_registers(100, count=20, device_id=1).isError(), i  # never dropped
        srv = link._transport
        _wait(lambda: srv.dropped_idle >= 40 + 1 - 8, 5)  # type: ignore[union-attr]
        assert srv.clients <= 8  # type: ignore[union-attr]
        assert link.stats.connections_dropped == srv.dropped_idle  # type: ignore[union-attr]  # for /metrics
        closed = 0
        for s in idle:  # the oldest idle ones were closed by the server
            s.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                closed += s.recv(1) == b""
        assert closed == 40 + 1 - 8
    finally:
        for s in idle:
            s.close()
        plc.close()
        link.stop()


def test_vision_heartbeat_follows_the_daemons_liveness_and_plc_watchdog_arms_on_first_change() -> None:
    """pymodbus' client as the PLC: VISION_HEARTBEAT stands still while starting and while `alive()` is false;
    no PLC_COMM_LOST while the PLC has never changed PLC_HEARTBEAT; after it did, 3 periods without -> ERROR 5."""
    port = free_port()
    alive = threading.Event()
    alive.set()
    link = _started(_server(port, heartbeat_ms=20, plc_heartbeat_ms=50), alive=alive.is_set)
    c = _plc(port)

    def hb_over(seconds: float) -> int:
        first = _read_b(c).vision_heartbeat
        time.sleep(seconds)
        return (_read_b(c).vision_heartbeat - first) & 0xFFFF

    try:
        assert hb_over(0.3) == 0 and _read_b(c).error_code == ErrorCode.NOT_READY  # STARTING
        link.set_ready(True)
        _wait(lambda: _read_b(c).error_code == 0)
        assert hb_over(0.3) > 0
        alive.clear()  # the daemon's pipeline stalled: the PLC's watchdog must see it
        _wait(lambda: hb_over(0.06) == 0, 5)  # a tick already past its probe may still land
        assert hb_over(0.3) == 0
        alive.set()
        assert hb_over(0.3) > 0
        # the PLC has not started its heartbeat: 10 watchdog periods, no comm loss latched
        assert not _read_b(c).error and link.stats.comm_lost == 0
        c.write_registers(1, [5], device_id=1)  # PLC_HEARTBEAT changes once, then stops
        _wait(lambda: _read_b(c).error_code == ErrorCode.PLC_COMM_LOST)
        assert _read_b(c).error and link.stats.comm_lost == 1
    finally:
        c.close()
        link.stop()


def test_recipe_refused_sets_error_with_code_4_and_clears_with_load_recipe(served) -> None:  # type: ignore[no-untyped-def]
    """ERROR and ERROR_CODE agree also for RECIPE_FAIL (was: code 4 with the ERROR bit off)."""
    link, port, recipes = served
    link.set_ready(True)
    resp = Responder(link).start()  # takes triggers (and with them the recipe loads) like the acquire stage
    c = _plc(port)
    try:
        _wait(lambda: not _read_b(c).error)
        c.write_registers(0, LAY.encode_a(PlcInputs(trigger_enable=True, load_recipe=True, recipe_no=9)),
                          device_id=1)
        _wait(lambda: _read_b(c).recipe_fail, 5)
        b = _read_b(c)
        assert (b.error, b.error_code, b.recipe_ack) == (True, ErrorCode.RECIPE, False) and recipes.asked == [9]
        c.write_registers(0, LAY.encode_a(PlcInputs(trigger_enable=True)), device_id=1)
        _wait(lambda: not _read_b(c).recipe_fail)
        b = _read_b(c)
        assert (b.error, b.error_code) == (False, 0)
    finally:
        c.close()
        resp.stop()


_HOLDER = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    try:
        socks.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2))
    except OSError:
        pass
print(len(socks), flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_out_of_descriptors_accept_failures_free_one_and_are_logged_once(capsys) -> None:  # type: ignore[no-untyped-def]
    """The cap set above what the process may open (a misconfiguration): accept() fails with EMFILE. The server
    drops a never-active connection to free a descriptor and retries; one log line per 10 s, no traceback; the
    PLC (connected before) is still answered. Another process holds the flood's 150 connections."""
    port = free_port()
    link = _started(_server(port, {"linger_ms": 0, "max_connections": 512}))
    link.set_ready(True)
    plc = _plc(port)
    assert not plc.read_holding_registers(100, count=20, device_id=1).isError()  # a PLC polls
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    holder = None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 30, hard))
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(port), "150", "3"], stdout=subprocess.PIPE,
                                  text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                                   (soft, hard)))
        assert holder.stdout is not None and int(holder.stdout.readline()) == 150
        srv = link._transport
        _wait(lambda: srv.accept_errors > 0, 10)  # type: ignore[union-attr]
        for _ in range(20):
            assert not plc.read_holding_registers(100, count=20, device_id=1).isError()
        assert srv.dropped_idle > 0  # type: ignore[union-attr]
        holder.wait(10)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait(5)
        plc.close()
        link.stop()
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    assert 1 <= text.count("plc_modbus_accept_failed") <= 2, text.count("plc_modbus_accept_failed")


def test_a_client_that_never_reads_its_answers_is_cut_off(served) -> None:  # type: ignore[no-untyped-def]
    """Pipelining without reading: the answers pile up in the server's send buffer; past 256 KiB the connection
    is aborted (memory stays bounded) while a polling PLC is still served."""
    link, port, _ = served
    plc = _plc(port)
    req = _mbap(1, 1, struct.pack(">BHH", 3, 100, 20))  # each answer 49 bytes
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        sent, cut = 0, False
        try:
            while sent < 200_000:
                s.sendall(req * 100)
                sent += 100
        except OSError:
            cut = True
        assert cut or _wait_noise(link, "slow_reader")
    assert link._transport.noise.counts["slow_reader"] == 1  # type: ignore[union-attr]
    assert not plc.read_holding_registers(100, count=20, device_id=1).isError()
    plc.close()


def _wait_noise(link: TransportLink, kind: str) -> bool:
    _wait(lambda: link._transport.noise.counts[kind] > 0, 5)  # type: ignore[union-attr]
    return True
