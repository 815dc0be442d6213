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
    """RECIPE_NO 2 switches to another product for real: later parts are judged and journaled by disc-b."""
    write_station(tmp_path, {"camera": {"bank": 4, "rate_hz": 50}})
    a = tmp_path / "products" / "disc-a.yaml"
    b = tmp_path / "products" / "disc-b.yaml"
    b.write_text(a.read_text().replace("name: disc-a", "name: disc-b").replace("plc_id: 1", "plc_id: 2"))
    d, t = start(tmp_path)
    try:
        assert d.pipeline is not None and d.pipeline.active.name == "disc-a"
        assert d.switch_by_plc_id(99) is False  # unknown RECIPE_NO: the PLC gets RECIPE_FAIL
        assert d.pipeline.active.name == "disc-a"
        assert d.switch_by_plc_id(2) is True
        end = time.monotonic() + 30
        while d.pipeline.active.name != "disc-b" and time.monotonic() < end:
            time.sleep(0.02)
        assert d.pipeline.active.name == "disc-b"  # applied between parts by the acquire thread
        switched_at = d.pipeline.stats.verdicts_total
        while d.pipeline.stats.verdicts_total < switched_at + 3 and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        d.request_stop()
        t.join(30)
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        products = [p for (p,) in db.execute("SELECT product FROM verdicts ORDER BY seq")]
        recipes = {p: r for p, r in db.execute("SELECT DISTINCT product, recipe_no FROM verdicts")}
    assert products[0] == "disc-a" and products[-1] == "disc-b"
    first_b = products.index("disc-b")
    assert set(products[first_b:]) == {"disc-b"}  # no part goes back to the old recipe
    assert recipes == {"disc-a": 1, "disc-b": 2}
