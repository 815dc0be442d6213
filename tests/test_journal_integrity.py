"""The journal keeps every row it can: a refused row never costs its batch, a failing disk is retried from a
bounded backlog (real tmpfs, filled for real), old journals are migrated, part numbers never repeat."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from inspectd.journal import COLUMNS, INSERT, Journal, named_row, open_db
from inspectd.types import Outcome, Verdict
from tests.tmpfs import mounted_tmpfs
from tests.waiting import wait_until


def verdict(seq: int, score: float = 0.1, product: str = "disc-a", outcome: Outcome = Outcome.PASS) -> Verdict:
    now = time.monotonic()
    return Verdict(seq=seq, part_id=1000 + seq, product=product, outcome=outcome, reason="", result_code=0,
                   plc_ok=outcome is Outcome.PASS, score=score, scores={"good": 1 - score, "defect": score},
                   t_trigger=now - 0.005, t_verdict=now, truth=None, model_sha256="ab" * 32,
                   stage_ms={"grab": 1.0, "infer": 1.0}, wall_time=time.time(), recipe_no=7,
                   source_ref=f"part_{seq:04d}.png")


def rows(path: Path, table: str = "verdicts") -> list[dict]:
    db = sqlite3.connect(str(path))
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        db.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs (root here and in CI); skipped with the reason where mounting is refused."""
    with mounted_tmpfs(tmp_path / "disk", 8) as mnt:
        yield mnt


def fill(folder: Path) -> Path:
    """Fill the filesystem to the last byte (a writer that is not us)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_nan_score_and_a_refused_row_cost_no_other_row(tmp_path: Path) -> None:
    """Before: one NaN score violated NOT NULL and SQLite dropped its whole batch (64 good rows with it)."""
    path = tmp_path / "j.sqlite"
    journal = Journal(path, batch=64)
    journal.start()
    for seq in range(1, 101):
        if seq == 10:
            journal.submit(verdict(seq, score=float("nan"), outcome=Outcome.FAILSAFE))
        elif seq == 100:  # the last one, so its number is the highest (see the restart below)
            journal.submit(verdict(seq, product=None))  # type: ignore[arg-type]  # NOT NULL: SQLite refuses it
        else:
            journal.submit(verdict(seq))
    journal.close()
    kept = rows(path)
    assert [r["seq"] for r in kept] == list(range(1, 100))
    nan = next(r for r in kept if r["seq"] == 10)
    assert nan["score"] == -1.0 and "score=nan" in nan["note"] and json.loads(nan["scores"])["defect"] is None
    [q] = rows(path, "quarantine")
    assert "NOT NULL" in q["error"] and json.loads(q["row"])["seq"] == 100
    assert journal.written == 99 and journal.quarantined == 1 and journal.dropped == 0
    assert {r["recipe_no"] for r in kept} == {7} and kept[0]["source_ref"] == "part_0001.png"
    again = Journal(path)  # a quarantined row's number is used too: the next run starts above it
    again.start()
    again.submit(verdict(1))
    again.close()
    assert rows(path)[-1]["part_no"] == 101 and json.loads(q["row"])["part_no"] == q["part_no"] == 100


def test_full_disk_rows_wait_in_the_backlog_then_all_land(tmpfs: Path) -> None:
    path = tmpfs / "j.sqlite"
    journal = Journal(path, batch=16, retry_s=(0.05, 0.2))
    health: list[tuple[bool, str]] = []
    changed = threading.Event()
    journal.on_health.append(lambda ok, why: (health.append((ok, why)), changed.set()))
    journal.start()
    for seq in range(1, 51):
        journal.submit(verdict(seq))
    wait_until(lambda: journal.written == 50, 30)
    filler = fill(tmpfs)
    with capture_logs() as logs:
        for seq in range(51, 451):
            journal.submit(verdict(seq))
        assert changed.wait(30) and health[-1][0] is False and "disk_full" in health[-1][1]
        wait_until(lambda: journal.pending == 0, 30)
        assert not journal.healthy and journal.backlog > 0 and journal.dropped == 0
        changed.clear()
        filler.unlink()  # someone frees space: the backlog is written, nothing was lost
        assert changed.wait(30) and health[-1] == (True, "")
    journal.close()
    assert [r["seq"] for r in rows(path)] == list(range(1, 451))
    assert journal.written == 450 and journal.dropped == 0 and journal.errors >= 1
    events = [e["event"] for e in logs]
    assert events.count("journal_write_failed") == 1 and "journal_write_recovered" in events
    assert next(e for e in logs if e["event"] == "journal_write_failed")["log_level"] == "error"


def test_a_full_backlog_loses_the_oldest_rows_counted(tmpfs: Path) -> None:
    path = tmpfs / "j.sqlite"
    journal = Journal(path, batch=16, backlog=100, retry_s=(0.05, 0.2))
    journal.start()
    journal.submit(verdict(1))
    wait_until(lambda: journal.written == 1, 30)
    filler = fill(tmpfs)
    with capture_logs() as logs:
        for seq in range(2, 302):
            journal.submit(verdict(seq))
        wait_until(lambda: journal.pending == 0 and journal.dropped == 200, 30)
    filler.unlink()
    journal.close()
    assert journal.dropped_by["backlog_full"] == 200
    got = rows(path)
    assert [r["seq"] for r in got if not r["note"]] == [1, *range(202, 302)]  # the newest 100 waited and landed
    # Ahead records written before the disk was quite full bring some of the lost back at the clean stop.
    back = [r["seq"] for r in got if r["note"]]
    assert len(back) == journal.recovered and set(back) <= set(range(2, 202))
    lost = [e for e in logs if e["event"] == "journal_rows_lost"]
    assert len(lost) == 1 and lost[0]["log_level"] == "error"


OLD_SCHEMA = """
CREATE TABLE verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, seq INTEGER NOT NULL, part_id INTEGER NOT NULL,
    product TEXT NOT NULL, t_trigger REAL NOT NULL, t_verdict REAL NOT NULL, latency_ms REAL NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'reject', 'failsafe')), reason TEXT NOT NULL,
    result_code INTEGER NOT NULL, plc_ok INTEGER NOT NULL, score REAL NOT NULL, scores TEXT NOT NULL,
    stage_ms TEXT NOT NULL, model_sha256 TEXT NOT NULL, truth TEXT);
CREATE INDEX verdicts_t ON verdicts (t_verdict);
"""


def test_an_old_journal_is_migrated_and_numbered(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(str(path))
    db.executescript(OLD_SCHEMA)
    for i in range(1, 6):
        db.execute(f"INSERT INTO verdicts ({', '.join(COLUMNS[:16])}) VALUES ({', '.join('?' * 16)})",
                   ("old", i, i, "disc-a", 1.0, 2.0, 1.0, "pass", "", 0, 1, 0.1, "{}", "{}", "sha", None))
    db.commit()
    db.close()
    journal = Journal(path)
    journal.start()
    for seq in (1, 2, 3):
        journal.submit(verdict(seq))
    journal.close()
    got = rows(path)
    assert [r["part_no"] for r in got] == [1, 2, 3, 4, 5, 6, 7, 8]  # old rows numbered by row id, new ones above
    assert got[0]["recipe_no"] == 0 and got[0]["source_ref"] == "" and got[-1]["recipe_no"] == 7
    db = open_db(path)  # opening again is a no-op
    assert [r[1] for r in db.execute("PRAGMA index_list(verdicts)") if r[2]] == ["verdicts_part_no"]  # unique
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(INSERT, named_row(run_id="x", seq=1, part_id=1, product="disc-a", t_trigger=1.0, t_verdict=2.0,
                                     verdict="pass", reason="", result_code=0, part_no=8))  # 8 is taken


def test_part_numbers_continue_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    for _run in range(3):
        journal = Journal(path)
        journal.start()
        for seq in range(1, 11):  # every run starts its seq at 1
            journal.submit(verdict(seq))
        journal.close()
    got = rows(path)
    assert [r["part_no"] for r in got] == list(range(1, 31))
    assert len({r["run_id"] for r in got}) == 3
    assert not journal.ahead.path.exists()  # a clean stop leaves nothing to recover


def test_verdicts_dropped_from_a_full_queue_are_journaled_from_the_ahead_log(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, maxsize=100)
    journal.start()
    other = sqlite3.connect(str(path), timeout=0)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: ours waits in SQLite's busy handler
    journal.submit(verdict(1))
    wait_until(lambda: journal.pending == 0, 30)  # taken; the writer is now blocked on the lock
    for seq in range(2, 302):
        journal.submit(verdict(seq))
    assert journal.dropped_by["queue_full"] == 200 and journal.pending == 100
    other.rollback()
    other.close()
    journal.close()
    got = rows(path)
    assert sorted(r["seq"] for r in got) == list(range(1, 302))  # nothing lost after all
    assert sorted(r["part_no"] for r in got) == list(range(1, 302))
    recovered = [r for r in got if r["note"].startswith("recovered")]
    assert len(recovered) == journal.recovered == 200
    assert "journal queue was full" in recovered[0]["note"]
