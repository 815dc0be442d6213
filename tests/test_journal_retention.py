"""Journal retention: by age and by size, run by the journal's own writer thread."""

from __future__ import annotations

import time
from pathlib import Path

from inspectd.journal import Journal, live_bytes, open_db, prune
from inspectd.types import Outcome, Verdict
from tests.test_report import add


def verdict(seq: int, wall_time: float | None = None) -> Verdict:
    now = time.monotonic()
    return Verdict(seq=seq, part_id=seq, product="disc-a", outcome=Outcome.PASS, reason="", result_code=0,
                   plc_ok=True, score=0.1, scores={"good": 0.9, "defect": 0.1}, t_trigger=now - 0.005,
                   t_verdict=now, truth=None, model_sha256="ab" * 32,
                   stage_ms={"grab": 1.0, "preprocess": 1.0, "infer": 1.0, "decide": 0.1},
                   wall_time=time.time() if wall_time is None else wall_time)


def test_prune_by_age_keeps_recent_rows(tmp_path: Path) -> None:
    db = open_db(tmp_path / "j.sqlite")
    now = time.time()
    for i in range(300):
        add(db, "disc-a", now - 100 * 86400 + i, "pass", "", 1.0, i)  # 100 days old
    for i in range(50):
        add(db, "disc-a", now - 3600 + i, "pass", "", 1.0, 1000 + i)
    db.commit()
    assert prune(db, now, retention_days=90, max_mb=None, chunk=64) == 300  # several chunks
    assert db.execute("SELECT COUNT(*), MIN(seq) FROM verdicts").fetchone() == (50, 1000)


def test_prune_by_size_deletes_oldest_first(tmp_path: Path) -> None:
    db = open_db(tmp_path / "j.sqlite")
    now = time.time()
    for i in range(20_000):
        add(db, "disc-a", now - 20_000 + i, "pass", "", 1.0, i)
    db.commit()
    assert live_bytes(db) > 2e6
    n = prune(db, now, retention_days=None, max_mb=1.0)
    assert live_bytes(db) <= 1e6
    left, oldest, newest = db.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM verdicts").fetchone()
    assert left == 20_000 - n and newest == 19_999 and oldest == n  # exactly the oldest n went


def test_writer_thread_applies_retention_and_caps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    db = open_db(path)
    for i in range(100):
        add(db, "disc-a", time.time() - 10 * 86400 + i, "pass", "", 1.0, 90_000 + i)  # 10 days old
    db.commit()
    db.close()
    journal = Journal(path, batch=256, retention_days=1, max_mb=0.5, prune_every_s=0.05)
    journal.start()
    for seq in range(1, 8001):
        journal.submit(verdict(seq))
        if seq % 500 == 0:
            time.sleep(0.06)  # let a prune become due between bursts, as on a running line
    deadline = time.monotonic() + 20
    while journal.written < 8000 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # one more prune pass after the last batch
    journal.close()
    assert journal.written == 8000 and journal.dropped == 0
    db = open_db(path)
    rows, oldest, newest = db.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM verdicts").fetchone()
    assert db.execute("SELECT COUNT(*) FROM verdicts WHERE seq >= 90000").fetchone()[0] == 0  # aged out
    assert newest == 8000 and rows < 8000 and oldest == 8000 - rows + 1  # the newest rows, contiguous
    assert journal.pruned == 100 + (8000 - rows)
    assert live_bytes(db) <= 0.5e6
    assert path.stat().st_size < 1.5e6  # freed pages are reused: the file stops growing near the cap
