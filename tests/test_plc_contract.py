"""What the pipeline and the daemon promise the PLC (README "PLC contract"), with the real daemon and a real
Modbus peer on 127.0.0.1 (pymodbus' client playing the PLC program of tools/plc_sim.py):

- results in trigger order, one per acknowledged trigger, against a pipeline slower than the PLC;
- READY means the next trigger will be inspected: a PLC obeying it never causes an `overflow` fail-safe;
- a recipe load takes effect between the triggers before and after it; RECIPE_ACK once applied.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.plc.config import LayoutConfig
from inspectd.plc.layout import Layout
from tests.conftest import write_station
from tests.onnx_models import slow_model
from tests.plc.peers import free_port, wait_port
from tools.plc_sim import ModbusPlcIO, PlcIO, PlcSim


@dataclass
class Seen:
    """What the PLC program saw and did, recorded at its register access."""

    acked: list[int] = field(default_factory=list)  # part ids whose TRIGGER got TRIGGER_ACK, in order
    triggered: list[int] = field(default_factory=list)  # TRIGGER rising edges written, in order
    loads: list[tuple[int, int]] = field(default_factory=list)  # (RECIPE_NO, parts triggered before LOAD_RECIPE)
    result_recipe: dict[int, int] = field(default_factory=dict)  # part id -> RESULT_RECIPE of its result
    error_codes: list[int] = field(default_factory=list)  # ERROR_CODE values, each change
    ready_with_error: int = 0  # scans showing READY together with an ERROR_CODE (never allowed)


class WatchedIO:
    """The simulated PLC's register access, recording what its program saw (no change to what it does)."""

    def __init__(self, io: PlcIO, layout: LayoutConfig | None = None) -> None:
        self.io, self.lay, self.seen = io, Layout(layout), Seen()
        self._a = self.lay.decode_a([0] * 10)
        self._lock = threading.Lock()

    def read_b(self) -> list[int]:
        words = self.io.read_b()
        b = self.lay.decode_b(words)
        with self._lock:
            s = self.seen
            if b.trigger_ack and self._a.trigger and (not s.acked or s.acked[-1] != self._a.part_id):
                s.acked.append(self._a.part_id)
            if b.result_valid:
                s.result_recipe.setdefault(b.result_part_id, b.result_recipe)
            if not s.error_codes or s.error_codes[-1] != b.error_code:
                s.error_codes.append(b.error_code)
            s.ready_with_error += b.ready and b.error_code != 0
        return words

    def write_a(self, words: list[int]) -> None:
        a = self.lay.decode_a(words)
        with self._lock:
            if a.trigger and not self._a.trigger:
                self.seen.triggered.append(a.part_id)
            if a.load_recipe and not self._a.load_recipe:
                self.seen.loads.append((a.recipe_no, len(self.seen.triggered)))
            self._a = a
        self.io.write_a(words)

    def close(self) -> None:
        self.io.close()


def plc_station(tmp_path: Path, *, budget_ms: float, model: Path, **over: Any) -> tuple[Path, int]:
    """The demo PLC station (Modbus server on a free port, synthetic camera fired per trigger), with products
    disc-a (RECIPE_NO 1) and disc-b (RECIPE_NO 2) on `model`. Returns the station file and the PLC port."""
    port = over["plc"]["port"] if "plc" in over else free_port()
    station = {"cycle_budget_ms": budget_ms, "trigger": {"source": "plc"},
               "camera": {"type": "synthetic", "bank": 8, "rate_hz": None, "software_trigger": True},
               "plc": {"type": "modbus_server", "port": port, "handshake": {"plc_heartbeat_ms": 0}},
               "archive": {"enabled": False}, **over}
    path = write_station(tmp_path, station, model=model)
    a = yaml.safe_load((tmp_path / "products" / "disc-a.yaml").read_text())
    (tmp_path / "products" / "disc-b.yaml").write_text(yaml.safe_dump({**a, "name": "disc-b", "plc_id": 2}))
    return path, port


def run_daemon(path: Path, port: int) -> tuple[Daemon, threading.Thread]:
    """The daemon in this process, up to READY (its pipeline started); fails at once if it cannot start."""
    d = Daemon(load_config(path), Options(handle_signals=False))
    t = threading.Thread(target=d.run, name="daemon")
    t.start()
    end = time.monotonic() + 120
    while d.pipeline is None or not d.pipeline._started:
        assert t.is_alive(), f"the daemon did not start (exit {int(d.exit_code)}; its log says why)"
        assert time.monotonic() < end, "the daemon did not start within 120 s"
        time.sleep(0.02)
    wait_port(port, 10)
    return d, t


@contextlib.contextmanager
def daemon_serving(path: Path, port: int) -> Iterator[Daemon]:
    """run_daemon, then on the way out its ordered stop (joined for up to 60 s)."""
    d, t = run_daemon(path, port)
    try:
        yield d
    finally:
        d.request_stop()
        t.join(60)


def journal(tmp_path: Path) -> list[tuple[int, str, str, str]]:
    """(part_id, product, verdict, reason) in journal (seq) order."""
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        return list(db.execute("SELECT part_id, product, verdict, reason FROM verdicts ORDER BY seq"))


def test_burst_against_a_slower_pipeline_results_in_trigger_order(tmp_path: Path) -> None:
    # ~90 ms of inference per part (far slower than the PLC, even on a loaded machine); the PLC triggers as soon
    # as READY allows (0.5 ms scan). A result buffer deeper than the pipeline, so the pipeline's room, not the
    # buffer, is what holds READY low.
    plc = {"type": "modbus_server", "port": free_port(), "handshake": {"plc_heartbeat_ms": 0, "buffer_depth": 32}}
    path, port = plc_station(tmp_path, budget_ms=3000, model=slow_model(tmp_path / "slow.onnx", matmuls=80),
                             plc=plc)
    with daemon_serving(path, port) as d:
        io = WatchedIO(ModbusPlcIO("127.0.0.1", port, LayoutConfig()))
        rep = PlcSim(io, seed=3).run(40, timeout_s=180)
        io.close()
    seen, rows = io.seen, journal(tmp_path)
    assert len(rep.triggered) == 40 and seen.triggered == rep.triggered
    assert seen.acked == rep.triggered, "a trigger sent on READY was not acknowledged"
    assert rep.missed_seen == 0 and rep.overrun_seen == 0
    assert rep.order == rep.triggered, "results out of trigger order (or missing) at the PLC"
    assert [r[0] for r in rows] == rep.triggered, "journal not in trigger order"
    assert not [r for r in rows if r[3] == "overflow"]
    assert {pid: (v, r) for pid, _, v, r in rows}.keys() == rep.results.keys()
    # the pipeline, not the result buffer, held READY low: the gate was exercised
    adm = d.pipeline.admission if d.pipeline else None
    assert adm is not None and adm.refusals["queue"] + adm.refusals["budget"] > 0


def test_recipe_load_applies_between_the_triggers_before_and_after_it(tmp_path: Path) -> None:
    # an in-flight limit: triggers wait for a slot, so some triggered before LOAD_RECIPE are not yet parts
    path, port = plc_station(tmp_path, budget_ms=1000, model=slow_model(tmp_path / "slow.onnx", matmuls=20),
                             pipeline={"max_in_flight": 3})
    with daemon_serving(path, port):
        io = WatchedIO(ModbusPlcIO("127.0.0.1", port, LayoutConfig()))
        # LOAD_RECIPE while parts triggered before it are still queued or inspected (slow model, full pipeline)
        rep = PlcSim(io, seed=5, recipes={15: 2, 30: 1, 45: 2}).run(60, timeout_s=180)
        io.close()
    seen, rows = io.seen, journal(tmp_path)
    assert rep.recipe == {2: True, 1: True}  # RECIPE_ACK with ACTIVE_RECIPE == RECIPE_NO
    assert [n for n, _ in seen.loads] == [2, 1, 2]
    expected: dict[int, str] = {}
    for i, pid in enumerate(seen.triggered):
        loaded = [no for no, before in seen.loads if before <= i]
        expected[pid] = {1: "disc-a", 2: "disc-b"}[loaded[-1] if loaded else 1]
    judged = {pid: product for pid, product, _, _ in rows}
    wrong = {pid: (expected[pid], judged.get(pid)) for pid in expected if judged.get(pid) != expected[pid]}
    assert not wrong, f"judged by the wrong recipe (expected, got): {wrong}"
    plc_ids = {"disc-a": 1, "disc-b": 2}
    assert seen.result_recipe == {pid: plc_ids[p] for pid, p in expected.items()}  # RESULT_RECIPE at the PLC
    assert rep.order == rep.triggered
