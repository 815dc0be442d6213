"""What the console reads from and adds to the journal's SQLite file.

Reads (window statistics, one part's row) open the journal read-only, as `inspectd report` does, so they never
hold a write lock. The console's own records go to two tables of their own in the same file, written by short
transactions on a separate connection (WAL: the journal's writer waits at most for one such transaction):
- `marks`: a technician's judgement of an archived part ("false_reject"), the retraining set. The verdict row's
  `note` column stays the journal's own (what it changed or recovered), so marks never mix with it.
- `audit`: every recipe change asked for through the console, refused or applied: who, when, old -> new.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

CONSOLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS marks (
    stem     TEXT PRIMARY KEY,   -- archive name <product>/<UTC time>_s<seq>_p<part id>_<verdict>
    part_no  INTEGER,            -- the verdict row's part number (NULL: row not found, e.g. pruned)
    mark     TEXT    NOT NULL,   -- 'false_reject'
    who      TEXT    NOT NULL,
    t        REAL    NOT NULL    -- unix time of the mark
);
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    t        REAL    NOT NULL,   -- unix time of the request
    who      TEXT    NOT NULL,   -- operator name given with the token
    client   TEXT    NOT NULL,   -- client address
    action   TEXT    NOT NULL,   -- 'switch_product' | 'set_threshold'
    target   TEXT    NOT NULL,   -- product, or product/rule
    old      TEXT    NOT NULL,
    new      TEXT    NOT NULL,
    result   TEXT    NOT NULL,   -- 'applied' | 'refused: <why>'
    detail   TEXT    NOT NULL DEFAULT ''
);
"""


class ConsoleStore:
    def __init__(self, journal_path: Path) -> None:
        self.path = Path(journal_path)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(str(self.path), timeout=5.0)) as db:
            db.executescript(CONSOLE_SCHEMA)
            with db:
                yield db

    def _read(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0)
        db.row_factory = sqlite3.Row
        return db

    # -- journal rows -------------------------------------------------------------------------------
    def find_row(self, seq: int, part_id: int, product: str, wall_time: float) -> dict[str, Any] | None:
        """The verdict row of an archived part: archive names carry seq, part id and the verdict's wall time,
        which is the row's t_verdict (indexed)."""
        db = self._read()
        if db is None:
            return None
        with closing(db):
            r = db.execute("SELECT * FROM verdicts WHERE t_verdict BETWEEN ? AND ? AND seq = ? AND part_id = ? "
                           "AND product = ? ORDER BY id DESC LIMIT 1",
                           (wall_time - 0.002, wall_time + 0.002, seq, part_id, product)).fetchone()
            return dict(r) if r is not None else None

    def window(self, since: float) -> dict[str, Any]:
        """Parts, yield, rejects by reason and fail-safes by reason since `since` (unix time), per product."""
        db = self._read()
        out: dict[str, Any] = {"since": since, "parts": 0, "pass": 0, "reject": 0, "failsafe": 0, "yield": None,
                               "rejects": {}, "failsafes": {}}
        if db is None:
            return out
        with closing(db):
            try:
                rows = db.execute("SELECT verdict, reason, COUNT(*) FROM verdicts WHERE t_verdict >= ? "
                                  "GROUP BY verdict, reason", (since,)).fetchall()
            except sqlite3.Error:  # no table yet (the journal has not started)
                return out
        for verdict, reason, n in rows:
            out["parts"] += n
            out[verdict] = out.get(verdict, 0) + n
            if verdict == "reject":
                out["rejects"][reason] = out["rejects"].get(reason, 0) + n
            elif verdict == "failsafe":
                out["failsafes"][reason] = out["failsafes"].get(reason, 0) + n
        out["yield"] = round(out["pass"] / out["parts"], 6) if out["parts"] else None
        return out

    # -- marks --------------------------------------------------------------------------------------
    def mark(self, stem: str, part_no: int | None, mark: str | None, who: str) -> None:
        """Set (or with mark None, clear) a technician's mark on an archived part."""
        with self._write() as db:
            if mark is None:
                db.execute("DELETE FROM marks WHERE stem = ?", (stem,))
            else:
                db.execute("INSERT OR REPLACE INTO marks (stem, part_no, mark, who, t) VALUES (?, ?, ?, ?, ?)",
                           (stem, part_no, mark, who, time.time()))

    def marks(self) -> dict[str, dict[str, Any]]:
        db = self._read()
        if db is None:
            return {}
        with closing(db):
            try:
                return {r["stem"]: dict(r) for r in db.execute("SELECT * FROM marks")}
            except sqlite3.Error:  # no marks table yet
                return {}

    # -- audit --------------------------------------------------------------------------------------
    def audit(self, who: str, client: str, action: str, target: str, old: str, new: str, result: str,
              detail: str = "") -> None:
        with self._write() as db:
            db.execute("INSERT INTO audit (t, who, client, action, target, old, new, result, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (time.time(), who, client, action, target, old, new, result, detail))

    def audit_log(self, limit: int = 50) -> list[dict[str, Any]]:
        db = self._read()
        if db is None:
            return []
        with closing(db):
            try:
                return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))]
            except sqlite3.Error:
                return []
