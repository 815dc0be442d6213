"""`inspectd run` moves what start-up made out of the cyclic GC's reach before READY (a full collection otherwise
stops every thread for tens of ms, longer than a cycle budget); the bench does the same for its run and undoes it,
so a tool running many benches in one process frees what each left behind."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from inspectd.bench import bench_config, run_pipeline
from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from tests.conftest import write_station
from tests.waiting import wait_until


def test_daemon_freezes_the_startup_heap_before_ready(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    cfg = load_config(write_station(tmp_path, {"camera": {"bank": 4, "rate_hz": 50}}))
    d = Daemon(cfg, Options(handle_signals=False, freeze_heap=True))
    t = threading.Thread(target=d.run)
    t.start()
    try:
        wait_until(lambda: d.pipeline is not None and d.pipeline.stats.verdicts_total >= 3, 30, "3 verdicts")
        assert d.pipeline is not None
        # modules, configs, the model's session, the stage threads: all made before READY, none traced since
        assert gc.get_freeze_count() > 10_000
    finally:
        d.request_stop()
        t.join(30)
        gc.unfreeze()  # this test process hosts other tests' objects too
    assert not t.is_alive()


def test_daemon_without_the_option_freezes_nothing(tmp_path: Path) -> None:
    cfg = load_config(write_station(tmp_path, {"camera": {"bank": 4, "rate_hz": 50}}))
    d = Daemon(cfg, Options(handle_signals=False, max_parts=3))
    t = threading.Thread(target=d.run)
    t.start()
    t.join(60)
    assert not t.is_alive() and gc.get_freeze_count() == 0


def test_bench_run_leaves_nothing_frozen(tmp_path: Path) -> None:
    cfg = bench_config(load_config(write_station(tmp_path, {"camera": {"bank": 4}})), in_flight=2)
    report = run_pipeline(cfg, 20, warmup=5)
    assert report["parts"] == 20
    assert gc.get_freeze_count() == 0
