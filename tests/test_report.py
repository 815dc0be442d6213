"""`inspectd report` on a journal with known rows: exact table lines, window edges, the PNG."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.image
import pytest

from inspectd.cli import main
from inspectd.journal import COLUMNS, open_db
from inspectd.report import parse_time

H8 = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc).timestamp()


def add(db, product: str, t: float, verdict: str, reason: str, latency_ms: float, seq: int) -> None:
    row = ("run1", seq, seq, product, t - latency_ms / 1e3, t, latency_ms, verdict, reason,
           {"pass": 0, "reject": 1, "failsafe": 1001}[verdict], int(verdict == "pass"), 0.1, "{}",
           json.dumps({"grab": 1.0}), "sha", None)
    cols = COLUMNS[:len(row)]  # the first schema's columns; the later ones have defaults
    db.execute(f"INSERT INTO verdicts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """disc-a 08:00: 8 pass, 1 reject 'defect', 1 fail-safe 'deadline'; 09:00: 3 pass, 1 reject 'scratch'.
    disc-a latencies are 1..14 ms. disc-b 08:00: 5 passes of 2 ms. One row before and one after the window."""
    path = tmp_path / "journal.sqlite"
    db = open_db(path)
    outcomes = ["pass"] * 8 + ["reject", "failsafe"] + ["pass"] * 3 + ["reject"]
    reasons = [""] * 8 + ["defect", "deadline"] + [""] * 3 + ["scratch"]
    for i, (v, r) in enumerate(zip(outcomes, reasons, strict=True)):
        t = H8 + 60 * i if i < 10 else H8 + 3600 + 60 * i
        add(db, "disc-a", t, v, r, float(i + 1), i + 1)
    for i in range(5):
        add(db, "disc-b", H8 + 30 + i, "pass", "", 2.0, 100 + i)
    add(db, "disc-a", H8 - 1, "reject", "defect", 99.0, 200)  # just before the window
    add(db, "disc-a", H8 + 2 * 3600, "reject", "defect", 99.0, 201)  # the window's end is exclusive
    db.commit()
    db.close()
    return path


def test_report_tables_on_known_journal(journal: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "out" / "report.png"
    rc = main(["report", "--journal", str(journal), "--since", "2026-11-24 08:00", "--until", "2026-11-24 10:00",
               "--utc", "--budget-ms", "12", "--png", str(png)])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.splitlines()
    assert "window 2026-11-24 08:00 .. 2026-11-24 10:00 (UTC), 19 parts, budget 12 ms" in lines
    table = [line.split() for line in lines]
    assert ["disc-a", "2026-11-24", "08:00", "10", "8", "1", "1", "80.0%"] in table
    assert ["disc-a", "2026-11-24", "09:00", "4", "3", "1", "0", "75.0%"] in table
    assert ["disc-a", "total", "14", "11", "2", "1", "78.6%"] in table
    assert ["disc-b", "2026-11-24", "08:00", "5", "5", "0", "0", "100.0%"] in table
    # reasons: share of all 19 parts in the window
    assert ["reject", "defect", "1", "5.26%"] in table
    assert ["reject", "scratch", "1", "5.26%"] in table
    assert ["failsafe", "deadline", "1", "5.26%"] in table
    assert "Deadline misses: 1 (5.26% of parts)" in lines
    # nearest-rank percentiles of 1..14 ms: p50 = 7, p90 = 13, p99 = p99.9 = max = 14; 13 and 14 exceed 12 ms
    assert ["disc-a", "14", "7.00", "13.00", "14.00", "14.00", "14.00", "2"] in table
    assert ["disc-b", "5", "2.00", "2.00", "2.00", "2.00", "2.00", "0"] in table
    assert f"plot: {png}" in lines
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 500 and image.shape[1] > 800


def test_report_empty_window_and_bad_time(journal: Path, tmp_path: Path, capsys) -> None:
    rc = main(["report", "--journal", str(journal), "--since", "2020-01-01 00:00", "--until", "2020-01-02 00:00",
               "--utc", "--png", str(tmp_path / "e.png")])
    assert rc == 0
    assert "no verdicts in this window" in capsys.readouterr().out
    assert main(["report", "--journal", str(journal), "--since", "yesterday-ish"]) == 2
    assert "cannot read time 'yesterday-ish'" in capsys.readouterr().err
    assert main(["report", "--journal", str(tmp_path / "missing.sqlite")]) == 2


def test_parse_time_forms() -> None:
    now = 1_800_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("8h", now) == now - 8 * 3600
    assert parse_time("30m", now) == now - 1800
    assert parse_time("2d", now) == now - 2 * 86400
    assert parse_time("2026-11-24 08:00", now, timezone.utc) == H8
    assert parse_time("2026-11-24T09:00+01:00", now) == H8  # an explicit offset wins over local time


def test_report_takes_journal_and_budget_from_the_station(journal: Path, tmp_path: Path, capsys) -> None:
    from tests.conftest import write_station

    station = write_station(tmp_path, {"cycle_budget_ms": 13})  # its journal is the fixture's file
    rc = main(["report", "--config", str(station), "--since", "2026-11-24 08:00", "--until", "2026-11-24 10:00",
               "--utc", "--png", str(tmp_path / "s.png")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert f"inspectd report: {journal}" in lines
    assert "window 2026-11-24 08:00 .. 2026-11-24 10:00 (UTC), 19 parts, budget 13 ms" in lines
    assert ["disc-a", "14", "7.00", "13.00", "14.00", "14.00", "14.00", "1"] in [line.split() for line in lines]


def test_interrupted_rows_count_as_parts_but_not_as_latencies(tmp_path: Path) -> None:
    from inspectd.report import build_report

    path = tmp_path / "journal.sqlite"
    db = open_db(path)
    for i in range(4):
        add(db, "disc-a", H8 + i, "pass", "", 10.0, i + 1)
    add(db, "disc-a", H8 + 10, "failsafe", "interrupted", 0.0, 5)  # journaled at restart: no latency
    db.commit()
    db.close()
    r = build_report(path, H8, H8 + 3600, 50.0, timezone.utc)
    assert r.parts == 5 and r.reasons[("failsafe", "interrupted")] == 1
    assert r.latency_ms["disc-a"].tolist() == [10.0] * 4
