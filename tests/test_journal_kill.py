"""kill -9: a part the PLC saw acknowledged just before the kill does not vanish. The daemon is a real process
triggered over Modbus TCP by a pymodbus client playing the PLC; its inference hangs (the launcher of
tests/test_supervise_stall: the real ONNX Runtime backend whose infer() blocks once a flag file names the
process) so the part is inside when SIGKILL lands. The restarted daemon journals it as fail-safe `interrupted`."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from inspectd.plc.layout import Layout, PlcInputs
from tests.conftest import write_station
from tests.plc.peers import free_port, wait_port
from tests.supervise_harness import START_S, DaemonProcess, journal_rows
from tests.test_supervise_stall import HANG_ENV
from tools.plc_sim import ModbusPlcIO


def _until(io: ModbusPlcIO, layout: Layout, pred, timeout: float):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        b = layout.decode_b(io.read_b())
        if pred(b):
            return b
        time.sleep(0.005)
    return None


def test_a_part_acknowledged_before_kill_9_is_journaled_interrupted_at_restart(tmp_path: Path) -> None:
    port = free_port()
    station = write_station(tmp_path, {
        "cycle_budget_ms": 60_000,  # the deadline keeper must not settle the hung part before the kill
        "watchdog": {"stall_s": 300},  # nor the stall watchdog
        "camera": {"bank": 8, "rate_hz": None, "software_trigger": True},
        "trigger": {"source": "plc"},
        "plc": {"type": "modbus_server", "address": "127.0.0.1", "port": port,
                "handshake": {"plc_heartbeat_ms": 0}}})
    hang = tmp_path / "hang"
    layout = Layout()
    daemon = DaemonProcess(station, None, module="tests.test_supervise_stall", env={HANG_ENV: str(hang)})
    io = None
    try:
        wait_port(port, START_S)
        io = ModbusPlcIO("127.0.0.1", port, layout.cfg)
        io.c.connect()
        # Two good parts first (they must keep their rows), then the one the kill catches.
        for part_id in (101, 102):
            io.write_a(layout.encode_a(PlcInputs(trigger_enable=True, part_id=part_id)))
            assert _until(io, layout, lambda b: b.ready, START_S), daemon.stderr()[-3000:]
            io.write_a(layout.encode_a(PlcInputs(trigger_enable=True, trigger=True, part_id=part_id)))
            shown = _until(io, layout, lambda b, p=part_id: b.result_valid and b.result_part_id == p, 30)
            assert shown is not None, daemon.stderr()[-3000:]
            io.write_a(layout.encode_a(PlcInputs(trigger_enable=True, result_ack=True, part_id=part_id)))
            assert _until(io, layout, lambda b: not b.result_valid, 10)
        io.write_a(layout.encode_a(PlcInputs(trigger_enable=True, part_id=4242)))
        assert _until(io, layout, lambda b: b.ready, 10)
        hang.write_text(str(daemon.pid))  # from now on this process's inference never returns
        io.write_a(layout.encode_a(PlcInputs(trigger_enable=True, trigger=True, part_id=4242)))
        acked = _until(io, layout, lambda b: b.trigger_ack, 10)
        assert acked is not None and not acked.result_valid
        daemon.proc.send_signal(signal.SIGKILL)  # the moment the PLC has seen TRIGGER_ACK
        assert daemon.wait(10) == -signal.SIGKILL
    finally:
        if io is not None:
            io.close()
        daemon.kill()

    first = journal_rows(tmp_path / "journal.sqlite")
    assert 4242 not in [r["part_id"] for r in first]  # what a restart has to make up for

    again = DaemonProcess(station, None)  # the hang file names the dead pid: this one inspects normally
    try:
        recovered = again.wait_event("journal_recovered_rows", START_S)
        assert recovered is not None, again.stderr()[-3000:]
        assert again.wait_event("ready", START_S) is not None
        again.signal(signal.SIGTERM)
        assert again.wait(30) == 0, again.stderr()[-3000:]
    finally:
        again.kill()

    assert recovered["interrupted"] == 1 and recovered["part_ids"] == [4242]
    rows = journal_rows(tmp_path / "journal.sqlite")
    [lost] = [r for r in rows if r["part_id"] == 4242]
    assert (lost["verdict"], lost["reason"], lost["result_code"], lost["plc_ok"]) == \
        ("failsafe", "interrupted", 1009, 0)
    # The kill lands after TRIGGER_ACK: before the pipeline took the trigger (its T record only: "never inspected")
    # or after (its A record: "accepted, no verdict"). Either way one fail-safe row with the recipe it was acked for.
    assert "no verdict" in lost["note"] or "trigger acknowledged, never inspected" in lost["note"], lost["note"]
    assert lost["model_sha256"] and lost["recipe_no"] == 1
    good = [r for r in rows if r["part_id"] in (101, 102)]
    assert len(good) == 2 and all(r["verdict"] != "failsafe" for r in good)
    numbers = [r["part_no"] for r in rows]
    assert len(numbers) == len(set(numbers)) and lost["part_no"] == 3  # accepted third, numbered third
    assert not (tmp_path / "journal.sqlite-ahead").exists()  # the clean stop left nothing behind


KILLED = """
import os, signal, sys, time
from pathlib import Path
from inspectd.journal import Journal
from inspectd.types import Part, Trigger
from tests.test_journal_integrity import verdict
j = Journal(Path(sys.argv[1]))
j.start()
now = time.monotonic()
j.trigger_seen(501, now, "disc-a", 1, "ab" * 32)  # acknowledged to the PLC; the pipeline never took it
j.trigger_seen(502, now, "disc-a", 1, "ab" * 32)
j.accept(Part(1, Trigger(502, now), "disc-a", now + 1))
v = verdict(1)
j.submit(v.__class__(**{**{f: getattr(v, f) for f in v.__dataclass_fields__}, "part_id": 502}))
while j.written < 1:
    time.sleep(0.01)
j.trigger_seen(503, now, "disc-a", 1, "ab" * 32)
j.accept(Part(2, Trigger(503, now), "disc-a", now + 1))  # inside the pipeline, no verdict yet
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_trigger_acknowledged_but_not_yet_taken_is_not_lost_to_kill_9(tmp_path: Path) -> None:
    """The window the daemon test cannot aim at: the PLC link acknowledged a trigger (its ahead record is written
    before the acknowledgement) and the process dies before the pipeline took it. A real SIGKILL of a process
    holding a real journal; the next start journals it."""
    import subprocess
    import sys

    from inspectd.journal import Journal
    from tests.supervise_harness import ROOT

    path = tmp_path / "journal.sqlite"
    r = subprocess.run([sys.executable, "-c", KILLED, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert [x["part_id"] for x in journal_rows(path)] == [502]
    journal = Journal(path)
    journal.start()
    journal.close()
    rows = {x["part_id"]: x for x in journal_rows(path)}
    assert set(rows) == {501, 502, 503} and journal.interrupted == 2
    assert rows[502]["verdict"] == "pass" and rows[502]["part_no"] == 1
    assert (rows[503]["reason"], rows[503]["part_no"]) == ("interrupted", 2) and "accepted" in rows[503]["note"]
    assert rows[501]["reason"] == "interrupted" and "trigger acknowledged, never inspected" in rows[501]["note"]
    assert rows[501]["part_no"] == 3 and rows[501]["recipe_no"] == 1  # numbered above every number in use
