"""The real daemon as a subprocess: end to end on the embedded default, and no part lost on SIGTERM."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import DEMO_MODEL, ROOT, write_station


def journal_rows(path: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM verdicts ORDER BY seq").fetchall()
    finally:
        db.close()


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_end_to_end_accuracy_on_synthetic_parts(tmp_path: Path) -> None:
    assert DEMO_MODEL.exists(), "the demo model is committed in engines/ (rebuild: tools/train_demo_model.py)"
    st = write_station(tmp_path, {"camera": {"seed": 12345, "bank": 200, "rate_hz": 200},
                                  "pipeline": {"max_in_flight": 2}, "cycle_budget_ms": 200})
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(st), "--max-parts", "200"],
                       capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = journal_rows(tmp_path / "journal.sqlite")
    assert [row["seq"] for row in rows] == list(range(1, 201))  # every part journaled exactly once
    assert all(row["truth"] in ("pass", "reject") for row in rows)
    judged = [row for row in rows if row["verdict"] != "failsafe"]
    assert len(judged) >= 195
    accuracy = sum(row["verdict"] == row["truth"] for row in judged) / len(judged)
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}"
    # one JSON log event per verdict with seq, part id, verdict, reason and per-stage ms
    verdict_events = [e for e in events(r.stdout) if e.get("event") == "verdict"]
    assert len(verdict_events) == 200
    assert set(verdict_events[0]) >= {"seq", "part_id", "verdict", "reason", "stage_ms", "latency_ms"}
    row = rows[0]
    assert len(row["model_sha256"]) == 64 and json.loads(row["scores"]).keys() == {"good", "defect"}


def test_sigterm_mid_run_loses_no_part(tmp_path: Path) -> None:
    st = write_station(tmp_path, {"camera": {"bank": 8, "rate_hz": 100}, "pipeline": {"queue_depth": 4}})
    proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(st)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        seen = 0
        while time.monotonic() < deadline and seen < 30:  # let parts flow, then stop it mid-run
            line = proc.stdout.readline()
            seen += '"event": "verdict"' in line
        assert seen == 30
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    stopped = next(e for e in events(out) if e.get("event") == "stopped")
    rows = journal_rows(tmp_path / "journal.sqlite")
    assert stopped["parts_in"] == stopped["verdicts"] == stopped["journaled"] == len(rows) > 30
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))
    assert stopped["journal_dropped"] == 0


def test_unopenable_journal_is_a_boot_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    st = write_station(tmp_path, {"journal": {"path": str(blocker / "journal.sqlite")}})
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(st)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "journal.path: cannot open" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
