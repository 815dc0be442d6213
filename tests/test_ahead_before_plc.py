"""A verdict's ahead record is written before the PLC link can show it: the journal precedes the PLC link in the
one ordered delivery, so a kill -9 never leaves a verdict the PLC was shown journaled as `interrupted`."""

from __future__ import annotations

import threading
from pathlib import Path

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.types import Part, Verdict
from tests.conftest import write_station
from tests.waiting import wait_until


class AheadProbe:
    """Delivered right after the PLC link: was this verdict's ahead record already in the file?"""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.seen: list[bool] = []

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        journal = self.daemon.journal
        assert journal is not None
        records = journal.ahead.read()
        self.seen.append(any(r[0] == "V" and r[3] == verdict.seq for r in records))


def test_the_ahead_record_precedes_the_plc_link(tmp_path: Path) -> None:
    cfg = load_config(write_station(tmp_path, {"camera": {"bank": 4, "rate_hz": 50}}))
    d = Daemon(cfg, Options(handle_signals=False, max_parts=5))
    probe = AheadProbe(d)
    d.options.extra_sinks.append(probe)
    t = threading.Thread(target=d.run)
    t.start()
    try:
        wait_until(lambda: d.pipeline is not None, timeout=60, what="the pipeline")
        assert d.pipeline is not None
        sinks = d.pipeline.bus.sinks
        assert sinks.index(d.journal) < sinks.index(d.plc)
        wait_until(lambda: len(probe.seen) >= 5, timeout=60, what="5 verdicts")
        assert all(probe.seen)
    finally:
        d.request_stop()
        t.join(30)
