"""`inspectd run` as a real process: /readyz turns 200, /metrics is scraped while it produces, SIGTERM ends it
cleanly, and what was scraped agrees with the journal it leaves behind."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, write_station
from tests.ports import free_port
from tests.test_metrics import get, samples


def test_scrape_running_process_then_sigterm(tmp_path: Path) -> None:
    port = free_port()
    path = write_station(tmp_path, {"camera": {"bank": 8}, "metrics": {"enabled": True, "port": port},
                                    "archive": {"enabled": False}, "log": {"every_part": False}})
    proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "never ready"
            try:
                if get(base + "/readyz")[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            time.sleep(0.1)
        totals = []
        while len(totals) < 3 or totals[-1] < 20:  # ~1 s of production at 20 parts/s
            status, body = get(base + "/metrics")
            assert status == 200
            s = samples(body.decode())
            totals.append(sum(v for (n, _), v in s.items() if n == "inspectd_parts_total"))
            assert time.monotonic() < deadline, totals
            time.sleep(0.2)
        assert totals == sorted(totals) and totals[-1] > totals[0]
        assert s[("inspectd_camera_connected", ())] == 1.0
        assert s[("inspectd_cycle_seconds_count", (("product", "disc-a"),))] <= totals[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    journaled = sqlite3.connect(str(tmp_path / "journal.sqlite")).execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    assert journaled >= totals[-1]  # nothing scraped that the journal does not have
    assert '"event": "metrics_listening"' in out
