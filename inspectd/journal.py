"""Verdict journal: every verdict as one row in SQLite (WAL), written in batches by its own thread."""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import structlog

from inspectd.errors import ConfigError
from inspectd.types import Part, Verdict

log = structlog.get_logger("inspectd.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT    NOT NULL,  -- one value per daemon start; seq restarts at 1 with each run
    seq          INTEGER NOT NULL,  -- part sequence number within the run
    part_id      INTEGER NOT NULL,  -- PLC part id (= seq in free-run)
    product      TEXT    NOT NULL,
    t_trigger    REAL    NOT NULL,  -- unix time of the trigger / grab
    t_verdict    REAL    NOT NULL,  -- unix time the verdict was issued
    latency_ms   REAL    NOT NULL,  -- trigger -> verdict, monotonic clock
    verdict      TEXT    NOT NULL CHECK (verdict IN ('pass', 'reject', 'failsafe')),
    reason       TEXT    NOT NULL,  -- rule name for rejects, fail-safe reason, '' for pass
    result_code  INTEGER NOT NULL,  -- RESULT_CODE sent to the PLC
    plc_ok       INTEGER NOT NULL,  -- 1 if the PLC was told OK
    score        REAL    NOT NULL,
    scores       TEXT    NOT NULL,  -- JSON {class: probability}
    stage_ms     TEXT    NOT NULL,  -- JSON {stage: milliseconds}
    model_sha256 TEXT    NOT NULL,
    truth        TEXT               -- 'pass' | 'reject' for labelled sources, else NULL
);
CREATE INDEX IF NOT EXISTS verdicts_t ON verdicts (t_verdict);
"""

COLUMNS = ("run_id", "seq", "part_id", "product", "t_trigger", "t_verdict", "latency_ms", "verdict", "reason",
           "result_code", "plc_ok", "score", "scores", "stage_ms", "model_sha256", "truth")


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
    db.executescript(SCHEMA)
    return db


def row(run_id: str, v: Verdict) -> tuple:
    latency = v.latency_ms
    return (run_id, v.seq, v.part_id, v.product, v.wall_time - latency / 1e3, v.wall_time, latency,
            v.outcome.value, v.reason, v.result_code, int(v.plc_ok), v.score,
            json.dumps({k: round(x, 6) for k, x in v.scores.items()}),
            json.dumps({k: round(x, 3) for k, x in v.stage_ms.items()}), v.model_sha256, v.truth)


def live_bytes(db: sqlite3.Connection) -> int:
    """Bytes in pages that hold data (the file minus its free list)."""
    size, pages, free = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count"))
    return int((pages - free) * size)


def prune(db: sqlite3.Connection, now: float, retention_days: float | None, max_mb: float | None,
          chunk: int = 5000) -> int:
    """Delete rows older than `retention_days`, then the oldest rows while live data exceeds `max_mb`.

    No VACUUM (it rewrites the whole file under an exclusive lock): freed pages are reused by later
    inserts, so the file stops growing at about `max_mb`. Deletes go in chunks so a reader (the shift
    report) never waits long. Returns the rows deleted.
    """
    deleted = 0
    oldest = "DELETE FROM verdicts WHERE id IN (SELECT id FROM verdicts {where} ORDER BY t_verdict LIMIT ?)"
    if retention_days is not None:
        cutoff = now - retention_days * 86400
        while True:
            with db:
                n = db.execute(oldest.format(where="WHERE t_verdict < ?"), (cutoff, chunk)).rowcount
            deleted += n
            if n < chunk:
                break
    if max_mb is not None:
        cap = max_mb * 1e6
        while (used := live_bytes(db)) > cap:
            rows = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
            if rows == 0:
                break
            # the share over the cap plus 5 %, so the next batch of inserts does not prune again at once
            k = min(chunk, max(1, int(rows * ((used - cap) / used + 0.05))))
            with db:
                deleted += db.execute(oldest.format(where=""), (k,)).rowcount
    return deleted


_STOP = object()


class Journal:
    """A VerdictSink. `submit` never blocks; `close` writes everything queued before returning."""

    def __init__(self, path: Path, batch: int = 64, maxsize: int = 100_000, retention_days: float | None = None,
                 max_mb: float | None = None, prune_every_s: float = 600.0) -> None:
        self.path = path
        self.batch = batch
        self.retention_days = retention_days
        self.max_mb = max_mb
        self.prune_every_s = prune_every_s  # retention runs in the writer thread, never on the hot path
        self.pruned = 0
        self._next_prune = 0.0  # first pass right after start
        self.run_id = uuid.uuid4().hex[:12]
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._db: sqlite3.Connection | None = None

    def start(self) -> None:
        try:
            self._db = open_db(self.path)
        except (OSError, sqlite3.Error) as e:  # no restart fixes a path or a permission: cannot boot
            raise ConfigError([f"journal.path: cannot open {self.path}: {e}"]) from None
        self._thread.start()

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        try:
            self._q.put_nowait(verdict)
        except queue.Full:
            self.dropped += 1
            log.error("journal_queue_full", seq=verdict.seq, dropped=self.dropped)

    @property
    def pending(self) -> int:
        return self._q.qsize()

    def _run(self) -> None:
        assert self._db is not None
        stop = False
        while not stop:
            rows = []
            try:
                item = self._q.get(timeout=self._prune_wait())
            except queue.Empty:
                self._maybe_prune()
                continue
            while True:
                if item is _STOP:
                    stop = True
                    break
                rows.append(row(self.run_id, item))
                if len(rows) >= self.batch:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
            if rows:
                self._write(rows)
            self._maybe_prune()
        self._db.close()

    def _prune_wait(self) -> float | None:
        if self.retention_days is None and self.max_mb is None:
            return None
        return max(0.05, self._next_prune - time.monotonic())

    def _maybe_prune(self) -> None:
        if (self.retention_days is None and self.max_mb is None) or time.monotonic() < self._next_prune:
            return
        assert self._db is not None
        self._next_prune = time.monotonic() + self.prune_every_s
        try:
            n = prune(self._db, time.time(), self.retention_days, self.max_mb)
        except sqlite3.Error as e:
            log.error("journal_prune_failed", error=str(e))
            return
        if n:
            self.pruned += n
            log.info("journal_pruned", rows=n, retention_days=self.retention_days, max_mb=self.max_mb,
                     live_mb=round(live_bytes(self._db) / 1e6, 3))

    def _write(self, rows: list[tuple]) -> None:
        assert self._db is not None
        sql = f"INSERT INTO verdicts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        for attempt in range(5):
            try:
                with self._db:
                    self._db.executemany(sql, rows)
                self.written += len(rows)
                return
            except sqlite3.Error as e:  # disk full, locked: retry briefly, then count the loss
                self.errors += 1
                log.error("journal_write_failed", error=str(e), rows=len(rows), attempt=attempt)
                time.sleep(0.05 * (attempt + 1))
        self.dropped += len(rows)

    def close(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)
