"""The journal's disk, for real (tmpfs mounts; root here and in CI, skipped with the reason elsewhere): the
daemon on a disk that fills while it runs (journal.on_failure failsafe and alarm), the archive sharing that
disk, and a start on a full disk (exit 72, which the unit restarts)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.errors import ExitCode
from inspectd.plc.layout import ErrorCode
from tests.conftest import write_station
from tests.supervise_harness import ROOT
from tests.test_journal_integrity import fill
from tests.tmpfs import mounted_tmpfs
from tests.waiting import wait_until


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", 16) as mnt:
        yield mnt


def readyz(d: Daemon) -> dict:
    assert d.metrics is not None and d.metrics.server is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics.server.port}/readyz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


@pytest.mark.parametrize("policy", ["failsafe", "alarm"])
def test_disk_fills_while_inspecting_no_row_lost_and_the_policy_holds(disk: Path, tmp_path: Path,
                                                                      policy: str) -> None:
    station = write_station(tmp_path, {"camera": {"bank": 8, "rate_hz": 100},
                                       "journal": {"path": str(disk / "journal.sqlite"), "on_failure": policy},
                                       "archive": {"enabled": False}, "log": {"every_part": False},
                                       "metrics": {"enabled": True, "port": 0}})
    d = Daemon(load_config(station), Options(handle_signals=False))
    d.start()
    try:
        assert d.journal is not None and d.pipeline is not None
        wait_until(lambda: d.journal.written >= 50, 30)
        filler = fill(disk)
        wait_until(lambda: not d.journal.healthy, 30)
        failing_from = d.pipeline.stats.verdicts_total
        wait_until(lambda: d.pipeline.stats.verdicts_total >= failing_from + 100, 30)
        ready = readyz(d)
        assert ready["ready"] is False and ready["checks"]["journal"] is False
        # What the PLC link's health probe reads: READY drops with ERROR_CODE 8 only where parts are fail-safed.
        # (A loaded machine can add TIMEOUT from deadline misses, which ranks first: hence both probes.)
        assert d._journal_code() == (ErrorCode.JOURNAL if policy == "failsafe" else 0)
        assert d._fault_code() != 0 if policy == "failsafe" else d._fault_code() != ErrorCode.JOURNAL
        filler.unlink()
        wait_until(lambda: d.journal.healthy, 30)
        healthy_from = d.pipeline.stats.verdicts_total
        wait_until(lambda: d.pipeline.stats.verdicts_total >= healthy_from + 20, 30)
        assert readyz(d)["ready"] is True and d._journal_code() == 0
    finally:
        d.shutdown()
    verdicts = d.pipeline.stats.verdicts_total
    db = sqlite3.connect(str(disk / "journal.sqlite"))
    rows = db.execute("SELECT part_no, seq, verdict, reason, result_code, plc_ok FROM verdicts ORDER BY seq").fetchall()
    assert [r[1] for r in rows] == list(range(1, verdicts + 1))  # every verdict journaled once, none lost
    assert d.journal.dropped == 0 and d.journal.errors >= 1
    down = [r for r in rows if r[3] == "journal_down"]
    if policy == "failsafe":  # no pass while the journal could not record it
        assert len(down) >= 100 and all(r[2:] == ("failsafe", "journal_down", 1010, 0) for r in down)
        assert d.pipeline.stats.failsafe_reasons["journal_down"] == len(down)
        assert all(r[2] != "pass" for r in rows[failing_from + 5:healthy_from - 5])
    else:  # alarm: inspected as usual, the alarm was the log, /readyz and the metrics
        assert down == [] and {r[2] for r in rows[failing_from:healthy_from]} >= {"pass"}
    assert rows[-1][2] != "failsafe" or rows[-1][3] != "journal_down"  # back to normal verdicts


@pytest.mark.parametrize("floor_mb", [4, 0])
def test_archive_on_the_journal_disk_leaves_the_journal_room(disk: Path, tmp_path: Path, floor_mb: float) -> None:
    """Every part archived onto the journal's 16 MiB disk with a quota far above it (before: 83-96 % of journal
    rows lost once the archive filled the disk). A 4 MB floor leaves the journal enough; with none the archive
    fills the disk, and the journal's first disk-full makes it take a floor (4 MB) and delete its oldest parts
    until 5 MB are free. No row is lost."""
    parts = 1500
    station = write_station(tmp_path, {"camera": {"bank": 8, "rate_hz": 300},
                                       "journal": {"path": str(disk / "journal.sqlite")},
                                       "archive": {"enabled": True, "path": str(disk / "archive"),
                                                   "sample_pass": 1.0, "quota_mb": 10_000, "min_free_mb": floor_mb},
                                       "log": {"every_part": False}})
    d = Daemon(load_config(station), Options(handle_signals=False, max_parts=parts))
    with capture_logs() as logs:
        d.start()
        try:
            assert d.pipeline is not None and d.journal is not None
            wait_until(lambda: d.journal.written >= parts, 120)
        finally:
            d.shutdown()
    rows = sqlite3.connect(str(disk / "journal.sqlite")).execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    assert rows == d.pipeline.stats.verdicts_total == parts and d.journal.dropped == 0 and d.journal.healthy
    archive = d.archive
    assert archive is not None and archive.saved > 0
    gave = [e for e in logs if e["event"] == "archive_gave_room"]
    if floor_mb == 4:
        assert archive.dropped["low_space"] == 1 and archive.dropped["disk_full"] == 0
        assert gave == [] and d.journal.errors == 0
    else:
        assert len(gave) >= 1 and gave[0]["deleted"] > 0 and archive.floor >= 4e6
        assert d.journal.errors >= 1  # it did fail, and got its room back


def test_start_on_a_full_disk_exits_72_not_the_config_code(disk: Path, tmp_path: Path) -> None:
    station = write_station(tmp_path, {"camera": {"bank": 4},
                                       "journal": {"path": str(disk / "line1" / "journal.sqlite"),
                                                   "disk_full_wait_s": 2}})
    filler = fill(disk)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == ExitCode.DISK_FULL == 72, r.stdout[-2000:] + r.stderr[-2000:]
    assert "journal.path" in r.stdout + r.stderr and "free space, then restart" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert time.monotonic() - t0 >= 2  # it held the exit for disk_full_wait_s: restarts stay spaced out

    # Space freed while it waits: it exits at once (for systemd's restart) instead of waiting out the time.
    station.write_text(station.read_text().replace("disk_full_wait_s: 2", "disk_full_wait_s: 150"))
    proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < end:
            line = proc.stdout.readline() if proc.stdout else ""
            if "cannot_start" in line:
                break
        filler.unlink()  # what the restart systemd makes will find
        assert proc.wait(60) == 72
    finally:
        if proc.poll() is None:
            proc.kill()
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station), "--max-parts", "5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    n = sqlite3.connect(str(disk / "line1" / "journal.sqlite")).execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    assert n >= 5
