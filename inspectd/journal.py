"""Verdict journal: every verdict as one row in SQLite (WAL), written in batches by its own thread.

What can go wrong, and what the journal does about it:
- A row SQLite refuses (a value of the wrong type, a violated constraint) never costs the other rows of its
  batch: the batch is retried row by row and the refused row goes to the `quarantine` table as JSON, counted.
  Non-finite numbers are stored as -1 with a `note` saying what they were, before SQLite sees them.
- A write that fails for the disk's sake (full, I/O error, read-only) keeps its rows in a bounded backlog that is
  retried with backoff; meanwhile the journal is unhealthy and its listeners are told (the daemon's
  `journal.on_failure` policy, /readyz, metrics, the log). Only rows pushed out of a full backlog are lost
  (counted, logged at error level).
- SIGKILL: each part is recorded in the ahead log when it is accepted and again when its verdict is issued.
  At the next start a verdict that never reached the journal is journaled from there (note `recovered`) and an
  accepted part with no verdict gets a fail-safe row with reason `interrupted`.
Every row carries `part_no`, a station-wide counter that resumes above the highest number the journal and the
ahead log hold, so no two rows of one journal share it (a unique index enforces it).
"""

from __future__ import annotations

import errno
import json
import math
import queue
import shutil
import sqlite3
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from inspectd.ahead_log import AheadLog
from inspectd.decide import FAILSAFE_CODES
from inspectd.errors import ConfigError, DiskFullError
from inspectd.types import Part, Reason, Verdict

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
    score        REAL    NOT NULL,  -- -1 when the model gave no finite score (see note)
    scores       TEXT    NOT NULL,  -- JSON {class: probability}
    stage_ms     TEXT    NOT NULL,  -- JSON {stage: milliseconds}
    model_sha256 TEXT    NOT NULL,
    truth        TEXT,              -- 'pass' | 'reject' for labelled sources, else NULL
    part_no      INTEGER,           -- station-wide part number, never reused (NULL: never)
    recipe_no    INTEGER NOT NULL DEFAULT 0,   -- plc_id of the recipe that judged the part
    source_ref   TEXT    NOT NULL DEFAULT '',  -- replay file name, or GenICam frame id / camera timestamp
    note         TEXT    NOT NULL DEFAULT '',  -- what the journal changed or recovered, '' normally
    region       TEXT              -- anomaly recipes: JSON [x, y, w, h], frame pixels behind the score; else NULL
);
CREATE INDEX IF NOT EXISTS verdicts_t ON verdicts (t_verdict);
CREATE TABLE IF NOT EXISTS quarantine (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    t     REAL NOT NULL,  -- unix time it was quarantined
    error TEXT NOT NULL,  -- why SQLite refused the row
    part_no INTEGER,      -- the row's part number (it counts as journaled: recovery leaves it alone)
    row   TEXT NOT NULL   -- the row as JSON {column: value}
);
"""

# Columns added since the first schema: a journal written by an older inspectd gets them at start.
MIGRATIONS = (("part_no", "INTEGER"), ("recipe_no", "INTEGER NOT NULL DEFAULT 0"),
              ("source_ref", "TEXT NOT NULL DEFAULT ''"), ("note", "TEXT NOT NULL DEFAULT ''"), ("region", "TEXT"))

COLUMNS = ("run_id", "seq", "part_id", "product", "t_trigger", "t_verdict", "latency_ms", "verdict", "reason",
           "result_code", "plc_ok", "score", "scores", "stage_ms", "model_sha256", "truth", "part_no", "recipe_no",
           "source_ref", "note", "region")
INSERT = f"INSERT INTO verdicts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
PART_NO = COLUMNS.index("part_no")

# SQLite result codes that mean the disk, not the row (sqlite3.Error.sqlite_errorcode, primary code).
SQLITE_DISK = {8: "read_only", 10: "io_error", 13: "disk_full", 14: "cannot_open"}
Row = tuple[Any, ...]


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
    # A checkpoint every 256 pages (1 MB at 4 kB) instead of 1000, and the WAL cut back to 1 MB after it: the
    # journal's headroom on a shared disk stays small and known (see archive.min_free_mb).
    db.execute("PRAGMA wal_autocheckpoint=256")
    db.execute("PRAGMA journal_size_limit=1048576")
    db.executescript(SCHEMA)
    migrate(db)
    return db


def migrate(db: sqlite3.Connection) -> list[str]:
    """Add the columns an older journal lacks; its rows get part numbers from their row ids. Returns the added."""
    have = {r[1] for r in db.execute("PRAGMA table_info(verdicts)")}
    added = [name for name, _ in MIGRATIONS if name not in have]
    with db:
        for name, ddl in MIGRATIONS:
            if name in added:
                db.execute(f"ALTER TABLE verdicts ADD COLUMN {name} {ddl}")
        if "part_no" in added:  # ids are unique and in insertion order: a fine station number for old rows
            db.execute("UPDATE verdicts SET part_no = id WHERE part_no IS NULL")
        db.execute("CREATE UNIQUE INDEX IF NOT EXISTS verdicts_part_no ON verdicts (part_no)")
    if added:
        log.info("journal_migrated", added=added)
    return added


def _finite(x: float, name: str, notes: list[str]) -> float:
    if math.isfinite(x):
        return x
    notes.append(f"{name}={x}")
    return -1.0


def _json_finite(d: Any, name: str, notes: list[str], digits: int) -> str:
    out: dict[str, Any] = {}
    for k, x in d.items():
        if isinstance(x, float) and not math.isfinite(x):
            notes.append(f"{name}.{k}={x}")
            out[str(k)] = None
        else:
            out[str(k)] = round(x, digits)
    return json.dumps(out)


def row(run_id: str, v: Verdict, part_no: int | None = None) -> Row:
    """The verdict as a row. Non-finite numbers (SQLite stores NaN as NULL, which NOT NULL refuses) become -1
    (null inside the JSON columns) and `note` names them, so the row is kept and says what it held."""
    notes: list[str] = []
    latency = v.latency_ms
    wall = v.wall_time
    score = _finite(v.score, "score", notes)
    latency = _finite(latency, "latency_ms", notes)
    return (run_id, v.seq, v.part_id, v.product, wall - latency / 1e3, wall, latency,
            v.outcome.value, v.reason, v.result_code, int(v.plc_ok), score,
            _json_finite(v.scores, "scores", notes, 6), _json_finite(v.stage_ms, "stage_ms", notes, 3),
            v.model_sha256, v.truth, part_no, v.recipe_no, v.source_ref,
            ("non-finite: " + ", ".join(notes)) if notes else "",
            json.dumps(list(v.region)) if v.region is not None else None)


# Ahead records, one JSON list per line (cheap to write on the hot path: primitives only):
#   A  accepted: ["A", part_no, run_id, seq, part_id, product, recipe_no, model_sha256, t_trigger]
#   V  issued:   the same nine, then outcome, reason, result_code, plc_ok, score, t_verdict, latency_ms, source_ref,
#                truth (scores and stage times are left to the journal row: they cost most to serialise)
#   T  trigger acknowledged to the PLC (written before the acknowledgement): ["T", part_id, run_id, product,
#      recipe_no, model_sha256, t_trigger]; a T that no later A of the same part id took is a part that vanished
#      between the PLC link and the pipeline
#   P  ["P", t]  retention deleted every row up to t_verdict t;   H  ["H", t]  a probe while the disk was failing
A_FIELDS = 9
V_FIELDS = A_FIELDS + 9


def named_row(**values: Any) -> Row:
    """A row from named values; columns not given get their neutral value (a column added later stays valid)."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not journal columns: {sorted(unknown)}")
    return tuple(values.get(c, _NEUTRAL.get(c)) for c in COLUMNS)


_NEUTRAL: dict[str, Any] = {"scores": "{}", "stage_ms": "{}", "score": 0.0, "latency_ms": 0.0, "plc_ok": 0,
                            "recipe_no": 0, "source_ref": "", "note": "", "model_sha256": "", "seq": 0}


def interrupted_row(a: list[Any], note: str) -> Row:
    """The fail-safe row of a part accepted by a process that died before its verdict (from its A record)."""
    _, n, run, seq, part_id, product, recipe_no, sha, t = a[:A_FIELDS]
    return named_row(run_id=str(run), seq=int(seq), part_id=int(part_id), product=str(product), t_trigger=float(t),
                     t_verdict=float(t), verdict="failsafe", reason=Reason.INTERRUPTED.value,
                     result_code=FAILSAFE_CODES[Reason.INTERRUPTED], model_sha256=str(sha), part_no=int(n),
                     recipe_no=int(recipe_no), note=note)


def orphan_row(t: list[Any], n: int, note: str) -> Row:
    """The fail-safe row of a trigger acknowledged to the PLC that never became a part (the process died first)."""
    _, part_id, run, product, recipe_no, sha, when = t[:7]
    return named_row(run_id=str(run), part_id=int(part_id), product=str(product), t_trigger=float(when),
                     t_verdict=float(when), verdict="failsafe", reason=Reason.INTERRUPTED.value,
                     result_code=FAILSAFE_CODES[Reason.INTERRUPTED], model_sha256=str(sha), part_no=n,
                     recipe_no=int(recipe_no), note=note)


def issued_row(v: list[Any], note: str) -> Row:
    """The row of a verdict that was issued (the PLC was told) but never journaled (from its V record); scores,
    stage times (and the anomaly region), not recorded ahead, are left neutral."""
    _, n, run, seq, part_id, product, recipe_no, sha, t = v[:A_FIELDS]
    outcome, reason, code, plc_ok, score, t_verdict, latency, source_ref, truth = v[A_FIELDS:V_FIELDS]
    notes: list[str] = []
    score = _finite(float(score), "score", notes)
    note = "; ".join(x for x in (note, ("non-finite: " + ", ".join(notes)) if notes else "") if x)
    return named_row(run_id=str(run), seq=int(seq), part_id=int(part_id), product=str(product), t_trigger=float(t),
                     t_verdict=float(t_verdict), latency_ms=float(latency), verdict=str(outcome), reason=str(reason),
                     result_code=int(code), plc_ok=int(plc_ok), score=score, model_sha256=str(sha), truth=truth,
                     part_no=int(n), recipe_no=int(recipe_no), source_ref=str(source_ref), note=note)


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


def disk_problem(e: BaseException) -> str | None:
    """'disk_full', 'io_error', ... when `e` is about the disk (retry later), None when it is about the row."""
    if isinstance(e, OSError):
        return "disk_full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
    if isinstance(e, (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, ValueError,
                      TypeError, OverflowError)):
        return None
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in SQLITE_DISK:
        return SQLITE_DISK[code & 0xFF]
    return "disk_full" if "full" in str(e) else "io_error"  # OperationalError without a code: locked, I/O


_STOP = object()
# The writer gathers the verdicts of this long into one transaction. Waking and committing per verdict cost more
# CPU per part than the demo model's inference (`inspectd bench --outputs journal`); a verdict is in the ahead log
# before it is queued, so a kill -9 while it waits loses nothing.
LINGER_S = 0.01
HealthListener = Callable[[bool, str], None]


class Journal:
    """A VerdictSink. `submit` never blocks; `close` writes everything queued before returning.

    `healthy` is False while a write is failing (rows wait in the backlog) or the ahead log cannot be written;
    listeners in `on_health` are called with (healthy, why) from the writer thread on every change.
    """

    def __init__(self, path: Path, batch: int = 64, maxsize: int = 100_000, retention_days: float | None = None,
                 max_mb: float | None = None, prune_every_s: float = 600.0, backlog: int = 50_000,
                 retry_s: tuple[float, float] = (0.2, 5.0), min_free_mb: float = 0.0,
                 ahead_rotate_bytes: int = 2_000_000, linger_s: float = LINGER_S) -> None:
        self.path = path
        self.batch = batch
        self.linger_s = linger_s  # a row waits this long at most for others to share its transaction
        self._closing = threading.Event()
        self.retention_days = retention_days
        self.max_mb = max_mb
        self.prune_every_s = prune_every_s  # retention runs in the writer thread, never on the hot path
        self.backlog_max = backlog
        self.retry_min_s, self.retry_max_s = retry_s
        self.min_free_mb = min_free_mb
        self.pruned = 0
        self._pruned_below = 0.0  # retention deleted every row with t_verdict up to this
        self._next_prune = 0.0  # first pass right after start
        self.run_id = uuid.uuid4().hex[:12]
        self.base = 0  # part_no = base + seq; set at start above every number already used
        self.written = 0
        self.dropped = 0  # verdicts that will not be journaled by this process (see dropped_by)
        self.dropped_by: Counter[str] = Counter()  # queue_full, backlog_full, unstorable, unwritten_at_stop
        self.errors = 0  # failed write attempts (each retried)
        self.quarantined = 0
        self.recovered = 0  # verdicts journaled from the ahead log (after a crash, or dropped from the queue)
        self.interrupted = 0  # accepted parts with no verdict found at start: journaled as fail-safe
        self.on_health: list[HealthListener] = []
        self.ahead = AheadLog(path.with_name(path.name + "-ahead"), ahead_rotate_bytes)
        self._backlog: deque[Row] = deque()
        self._failing = ""  # why the last write failed; '' once a write succeeds
        self._retry_at = 0.0
        self._retry_s = self.retry_min_s
        self._lost_in_episode = 0
        self._healthy = True
        self._why = ""
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._db: sqlite3.Connection | None = None

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open (and migrate) the journal, journal what a killed process left in the ahead log, start writing.
        A full disk raises DiskFullError (restartable); a path that cannot work raises ConfigError."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            free_mb = shutil.disk_usage(self.path.parent).free / 1e6
            if free_mb < self.min_free_mb:
                raise DiskFullError(f"journal.path: {self.path.parent} has {free_mb:.1f} MB free, below "
                                    f"journal.min_free_mb ({self.min_free_mb:g} MB): free space, then restart")
            self._db = open_db(self.path)
            self.base = self._highest_part_no()
            self._recover(at_start=True)
            self.ahead.remove()
            self.ahead.open()
        except DiskFullError:
            raise
        except (OSError, sqlite3.Error) as e:
            if self._db is not None:
                self._db.close()
                self._db = None
            if disk_problem(e) == "disk_full":
                raise DiskFullError(f"journal.path: {self.path}: disk full ({e}): free space, then restart") from None
            # no restart fixes a path or a permission: cannot boot
            raise ConfigError([f"journal.path: cannot open {self.path}: {e}"]) from None
        self._thread.start()

    def _highest_part_no(self) -> int:
        assert self._db is not None
        top = self._db.execute("SELECT MAX(n) FROM (SELECT MAX(part_no) AS n FROM verdicts UNION ALL "
                               "SELECT MAX(part_no) FROM quarantine)").fetchone()[0] or 0
        ahead = [int(r[1]) for r in self.ahead.read() if r[0] in ("A", "V") and isinstance(r[1], int)]
        return max([int(top), *ahead])

    def _recover(self, at_start: bool) -> None:
        """Journal what the ahead log holds and the journal does not: the verdict row as issued, or for a part
        accepted without a verdict, the fail-safe `interrupted` row."""
        assert self._db is not None
        accepted: dict[int, list[Any]] = {}
        issued: dict[int, list[Any]] = {}
        records = self.ahead.read()
        # Retention deleted every row up to this time: its records are not missing, they were pruned.
        pruned_below = max([self._pruned_below, *(float(r[1]) for r in records if r[0] == "P" and len(r) == 2)])
        triggers: dict[int, deque[list[Any]]] = {}  # part id -> acknowledged triggers no part has taken yet
        for rec in records:
            if rec[0] == "A" and len(rec) == A_FIELDS:
                waiting = triggers.get(rec[4])
                if waiting:
                    waiting.popleft()  # the pipeline took this trigger (FIFO, as the link queues them)
                if float(rec[8]) > pruned_below:
                    accepted[int(rec[1])] = rec
            elif rec[0] == "V" and len(rec) == V_FIELDS and float(rec[A_FIELDS + 5]) > pruned_below:
                issued[int(rec[1])] = rec
            elif rec[0] == "T" and len(rec) == 7 and float(rec[6]) > pruned_below:
                triggers.setdefault(rec[1], deque()).append(rec)
        orphans = sorted((t for waiting in triggers.values() for t in waiting), key=lambda t: float(t[6]))
        if orphans:
            self._journal_orphans(orphans, at_start)
        numbers = set(accepted) | set(issued)
        if not numbers:
            return
        span = (min(numbers), max(numbers))
        present = {r[0] for r in self._db.execute("SELECT part_no FROM verdicts WHERE part_no BETWEEN ? AND ? UNION "
                                                  "SELECT part_no FROM quarantine WHERE part_no BETWEEN ? AND ?",
                                                  span + span)}
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows: list[Row] = []
        recovered, interrupted = [], []
        for n in sorted(numbers - present):
            if n in issued:
                why = "the process died" if at_start else "the journal queue was full"
                rows.append(issued_row(issued[n], f"recovered {when}: issued, not journaled ({why}); "
                                                  "scores and stage times not kept"))
                recovered.append(n)
            else:
                why = "the process died" if at_start else "the daemon stopped without one"
                rows.append(interrupted_row(accepted[n], f"journaled {when}: accepted, no verdict ({why}); "
                                                         "the PLC got no result for it"))
                interrupted.append(n)
        if not rows:
            return
        with self._db:
            self._insert_rows(rows)
        self.recovered += len(recovered)
        self.interrupted += len(interrupted)
        log.warning("journal_recovered_rows", recovered=len(recovered), interrupted=len(interrupted),
                    part_nos=sorted(recovered + interrupted)[:50],
                    part_ids=[accepted[n][4] for n in interrupted][:50])

    def _journal_orphans(self, orphans: list[list[Any]], at_start: bool) -> None:
        """Triggers acknowledged to the PLC that no part took: numbered above everything used, journaled
        `interrupted` like an accepted part without a verdict."""
        assert self._db is not None
        top = max(self.base, self._highest_part_no())
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        why = "the process died" if at_start else "the daemon stopped"
        rows = [orphan_row(t, top + i, f"journaled {when}: trigger acknowledged, never inspected ({why}); the PLC "
                                        "got no result for it") for i, t in enumerate(orphans, 1)]
        with self._db:
            self._insert_rows(rows)
        if at_start:
            self.base = top + len(rows)
        self.interrupted += len(rows)
        log.warning("journal_recovered_rows", recovered=0, interrupted=len(rows),
                    part_nos=[r[PART_NO] for r in rows][:50], part_ids=[t[1] for t in orphans][:50],
                    source="trigger_acknowledged_not_taken")

    # -- hot path ---------------------------------------------------------------------------------
    def trigger_seen(self, part_id: int, t_trigger: float, product: str, recipe_no: int, sha: str) -> None:
        """PLC link thread, before TRIGGER_ACK goes out: the record that covers the time until the pipeline
        takes the trigger (the link's queue), where a SIGKILL would otherwise leave no trace of it."""
        self.ahead.append(["T", part_id, self.run_id, product, recipe_no, sha,
                           time.time() - (time.monotonic() - t_trigger)])

    def part_no(self, seq: int) -> int:
        return self.base + seq

    def accept(self, part: Part) -> None:
        """Called as a part is accepted (by the pipeline, as it creates the part): the ahead record that turns a
        SIGKILL into an `interrupted` row instead of a part nobody knows about. A few microseconds."""
        rt = part.runtime
        recipe_no, sha = (rt.product.plc_id, rt.backend.model_sha256) if rt is not None else (0, "")
        self.ahead.append(["A", self.base + part.seq, self.run_id, part.seq, part.part_id, part.product, recipe_no,
                           sha, time.time() - (time.monotonic() - part.trigger.t_trigger)])

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        v = verdict
        self.ahead.append(["V", self.base + v.seq, self.run_id, v.seq, v.part_id, v.product, v.recipe_no,
                           v.model_sha256, v.wall_time - v.latency_ms / 1e3, v.outcome.value, v.reason, v.result_code,
                           int(v.plc_ok), v.score, v.wall_time, v.latency_ms, v.source_ref, v.truth])
        try:
            self._q.put_nowait(v)  # the row is built by the writer thread, off the hot path
        except queue.Full:
            self._drop("queue_full", 1)
            log.error("journal_queue_full", seq=verdict.seq, dropped=self.dropped)

    @property
    def pending(self) -> int:
        return self._q.qsize()

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def problem(self) -> str:
        """'disk_full', 'io_error', 'read_only', ... while unhealthy; '' when healthy."""
        if self._failing:
            return self._failing
        if self.ahead.last_error:
            return "disk_full" if self.ahead.last_errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
        return ""

    @property
    def why(self) -> str:
        """What is wrong while unhealthy ('' when healthy)."""
        return self._why

    # -- writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        assert self._db is not None
        stop = False
        while not stop:
            rows: list[Row] = []
            try:
                item = self._q.get(timeout=self._wait_s())
            except queue.Empty:
                item = None
            if item is not None and item is not _STOP and self._q.qsize() < self.batch:
                # Let more gather (one wait per transaction, not per verdict): a transaction per verdict cost more
                # CPU per part than the inference. close() cuts the wait short.
                self._closing.wait(self.linger_s)
            while item is not None:
                if item is _STOP:
                    stop = True
                    break
                rows.append(self._row(item))
                if len(rows) >= self.batch:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
            self._flush(rows, force=stop)
            self._maybe_prune()
            self._maybe_rotate()
            self._update_health()
        clean = not self._backlog and not self._failing
        if clean:
            try:
                self._recover(at_start=False)  # verdicts dropped from a full queue are in the ahead log
            except sqlite3.Error as e:
                clean = False
                log.error("journal_recover_failed", error=str(e))
        elif self._backlog:
            self._drop("unwritten_at_stop", len(self._backlog))  # the next start recovers those the ahead log holds
            log.error("journal_stopped_with_backlog", rows=len(self._backlog), problem=self._failing,
                      ahead_log=str(self.ahead.path), next_start="journals them from the ahead log where it holds them")
        self.ahead.close()
        if clean:
            self.ahead.remove()  # all journaled; otherwise the next start journals what is left in it
        self._db.close()

    def _row(self, v: Verdict) -> Row:
        try:
            return row(self.run_id, v, self.base + v.seq)
        except Exception as e:  # a verdict that cannot even be formatted: keep what identifies it
            log.error("journal_row_unformattable", error=repr(e), seq=getattr(v, "seq", None))
            seq = int(getattr(v, "seq", 0))
            return named_row(run_id=self.run_id, seq=seq, part_id=int(getattr(v, "part_id", 0)),
                             product=str(getattr(v, "product", "")), t_trigger=time.time(), t_verdict=time.time(),
                             verdict="failsafe", reason="unformattable", score=-1.0, part_no=self.base + seq,
                             note=f"unformattable verdict: {e!r}"[:500])

    def _wait_s(self) -> float | None:
        waits = []
        if self.retention_days is not None or self.max_mb is not None:
            waits.append(max(0.05, self._next_prune - time.monotonic()))
        if self._backlog or self._failing or self.ahead.last_error:
            waits.append(max(0.01, self._retry_at - time.monotonic()))
        return min(waits) if waits else None

    def _flush(self, rows: list[Row], force: bool = False) -> None:
        if self._backlog and not force and time.monotonic() < self._retry_at:
            self._keep(rows)  # the disk is failing: do not hammer it, wait for the retry
            return
        todo = list(self._backlog) + rows
        self._backlog.clear()
        for i in range(0, len(todo), self.batch):
            chunk = todo[i:i + self.batch]
            problem = self._write(chunk)
            if problem is not None:
                self._keep(todo[i:])
                self._retry_at = time.monotonic() + self._retry_s
                self._retry_s = min(self._retry_s * 2, self.retry_max_s)
                return
        if self._failing:
            log.info("journal_write_recovered", after=self._failing, rows_lost=self._lost_in_episode)
            self._failing = ""
            self._lost_in_episode = 0
        self._retry_s = self.retry_min_s

    def _write(self, rows: list[Row]) -> str | None:
        """One transaction; rows SQLite refuses are quarantined one by one. Returns the disk problem, if any."""
        assert self._db is not None
        if not rows:
            return None
        try:
            try:
                with self._db:
                    self._db.executemany(INSERT, rows)
                stored = len(rows)
            except sqlite3.Error as e:
                if disk_problem(e) is not None:
                    raise
                with self._db:  # one bad row: the others still go in, the bad one is quarantined
                    stored = self._insert_rows(rows)
            self.written += stored
            return None
        except (sqlite3.Error, OSError) as e:
            problem = disk_problem(e) or "io_error"
            self.errors += 1
            if self._failing != problem:
                log.error("journal_write_failed", error=str(e), problem=problem, rows=len(rows),
                          backlog=len(self._backlog) + len(rows), retry_s=self._retry_s)
            self._failing = problem
            return problem

    def _insert_rows(self, rows: Iterable[Row]) -> int:
        """Row by row inside the caller's transaction: a refused row is rolled back alone and quarantined.
        Returns the rows that went into `verdicts`."""
        assert self._db is not None
        stored = 0
        for r in rows:
            try:
                self._db.execute(INSERT, r)
                stored += 1
            except sqlite3.Error as e:
                if disk_problem(e) is not None:
                    raise
                self._quarantine(r, e)
        return stored

    def _quarantine(self, r: Row, e: Exception) -> None:
        assert self._db is not None
        record = json.dumps(dict(zip(COLUMNS, r, strict=False)), default=repr)
        try:
            self._db.execute("INSERT INTO quarantine (t, error, part_no, row) VALUES (?, ?, ?, ?)",
                             (time.time(), str(e), r[PART_NO] if isinstance(r[PART_NO], int) else None, record))
        except sqlite3.Error as e2:
            if disk_problem(e2) is not None:
                raise
            self._drop("unstorable", 1)
            log.error("journal_row_unstorable", error=str(e2), row=record[:500])
            return
        self.quarantined += 1
        log.error("journal_row_quarantined", error=str(e), part_no=r[PART_NO], seq=r[1])

    def _keep(self, rows: list[Row]) -> None:
        """Into the bounded backlog; what does not fit pushes the oldest rows out: those are lost."""
        self._backlog.extend(rows)
        over = len(self._backlog) - self.backlog_max
        if over > 0:
            for _ in range(over):
                self._backlog.popleft()
            if not self._lost_in_episode:
                log.error("journal_rows_lost", rows=over, backlog=self.backlog_max, problem=self._failing)
            self._lost_in_episode += over
            self._drop("backlog_full", over)

    def _drop(self, why: str, n: int) -> None:
        self.dropped += n
        self.dropped_by[why] += n

    def _update_health(self) -> None:
        # Nothing may be appended for a while (no parts): probe, so health comes back with the disk.
        if (self.ahead.last_error and not self._failing and time.monotonic() >= self._retry_at
                and not (self.ahead.reopen() and self.ahead.append(["H", time.time()]))):
            self._retry_at = time.monotonic() + self.retry_max_s
        if self._failing:
            why = f"journal write failing ({self._failing}); {len(self._backlog)} rows waiting"
        elif self.ahead.last_error:
            why = f"ahead log not writable: {self.ahead.last_error}"
        else:
            why = ""
        healthy = not why
        if healthy == self._healthy:
            self._why = why
            return
        self._healthy, self._why = healthy, why
        for listener in list(self.on_health):
            try:
                listener(healthy, why)
            except Exception:
                log.exception("journal_health_listener_failed")

    def _maybe_rotate(self) -> None:
        # Only while healthy and caught up: the generation dropped by this rotation is then long journaled.
        if self.ahead.large and self._healthy and not self._backlog and self._q.qsize() < self.batch:
            try:
                self.ahead.rotate()
            except OSError as e:
                self.ahead.errors += 1
                self.ahead.last_error = f"{self.ahead.path}: rotate: {e}"

    def _prune_due(self) -> bool:
        return (self.retention_days is not None or self.max_mb is not None) and time.monotonic() >= self._next_prune

    def _maybe_prune(self) -> None:
        if not self._prune_due():
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
            oldest = self._db.execute("SELECT MIN(t_verdict) FROM verdicts").fetchone()[0]
            self._pruned_below = max(self._pruned_below, oldest if oldest is not None else time.time())
            self.ahead.append(["P", self._pruned_below])  # recovery must not bring these rows back
            log.info("journal_pruned", rows=n, retention_days=self.retention_days, max_mb=self.max_mb,
                     live_mb=round(live_bytes(self._db) / 1e6, 3))

    def close(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._closing.set()
            self._q.put(_STOP)
            self._thread.join(timeout)

