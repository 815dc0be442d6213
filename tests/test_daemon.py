"""The daemon in-process: triggers refused by the PLC link are journaled, product switch by RECIPE_NO."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from tests.conftest import write_station


def start(tmp_path: Path, **station) -> tuple[Daemon, threading.Thread]:
    cfg = load_config(write_station(tmp_path, {"camera": {"bank": 4, "rate_hz": 50}, **station}))
    d = Daemon(cfg, Options(handle_signals=False))
    t = threading.Thread(target=d.run)
    t.start()
    end = time.monotonic() + 30
    while (d.pipeline is None or d.pipeline.stats.verdicts_total < 3) and time.monotonic() < end:
        time.sleep(0.02)
    return d, t


def test_refused_trigger_is_journaled_as_failsafe(tmp_path: Path) -> None:
    d, t = start(tmp_path)
    d._on_missed_trigger(777, "not_ready")  # what the PLC link calls from its worker
    d._on_missed_trigger(778, "trigger_queue_full")
    d.request_stop()
    t.join(30)
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = dict(db.execute("SELECT part_id, verdict || ':' || reason FROM verdicts WHERE part_id > 700"))
        seqs = [s for (s,) in db.execute("SELECT seq FROM verdicts ORDER BY seq")]
    assert rows == {777: "failsafe:not_ready", 778: "failsafe:overflow"}
    assert seqs == list(range(1, len(seqs) + 1))  # refused triggers take a seq like any part


def test_switch_by_recipe_number(tmp_path: Path) -> None:
    b = tmp_path / "products" / "disc-b.yaml"
    d, t = start(tmp_path)
    try:
        assert d.switch_by_plc_id(1) is True
        assert d.switch_by_plc_id(99) is False  # unknown RECIPE_NO: the PLC gets RECIPE_FAIL
        assert not b.exists()
    finally:
        d.request_stop()
        t.join(30)
