"""Journal rows after a persisted cursor: the store half of store-and-forward.

The journal (inspectd.journal) is the store: every verdict is a row there before any plant output sees it.
A forwarder reads the rows after its cursor with its own read-only connection (WAL lets it read while the
writer writes) and moves the cursor only past rows the peer acknowledged, so an outage or a restart resends
instead of losing. Only the SQLite table is shared with the journal module, never its objects.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("inspectd.outputs")

JSON_COLUMNS = ("scores", "stage_ms")  # stored as JSON text; forwarded as objects


class JournalFeed:
    """Reads `verdicts` rows by id. Opened lazily: the journal creates the file first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._files = (path, path.with_name(path.name + "-wal"))
        self._stamp: tuple[int, ...] = ()

    def changed(self) -> bool:
        """True when the journal or its WAL was written since the last call (mtime and size, two stat calls).
        A cheap gate between regular reads; not exact (coarse timestamps), so it never replaces them."""
        stamp: tuple[int, ...] = ()
        for f in self._files:
            try:
                st = os.stat(f)
            except FileNotFoundError:
                continue
            stamp += (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    def after(self, last_id: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` rows with id > last_id, oldest first; JSON columns decoded."""
        rows = self._conn().execute("SELECT * FROM verdicts WHERE id > ? ORDER BY id LIMIT ?",
                                    (last_id, limit)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in JSON_COLUMNS:
                if isinstance(d.get(k), str):
                    d[k] = json.loads(d[k])
            out.append(d)
        return out

    def backlog(self, last_id: int) -> tuple[int, float | None]:
        """Rows after `last_id` and the t_verdict (unix time) of the oldest of them."""
        n, oldest = self._conn().execute("SELECT COUNT(*), MIN(t_verdict) FROM verdicts WHERE id > ?",
                                         (last_id,)).fetchone()
        return int(n), oldest

    def max_id(self) -> int:
        return int(self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Cursor:
    """The id of the last journal row the peer acknowledged, kept in a small file (write + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_id = 0
        self._saved = -1

    def load(self) -> int:
        try:
            self.last_id = int(json.loads(self.path.read_text())["last_id"])
        except FileNotFoundError:
            self.last_id = 0
        except (ValueError, KeyError, TypeError) as e:  # a torn or edited file: resend rather than skip
            log.warning("cursor_unreadable", path=str(self.path), error=str(e))
            self.last_id = 0
        self._saved = self.last_id
        return self.last_id

    def save(self) -> None:
        if self.last_id == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"last_id": self.last_id, "saved_at": time.time()}))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new cursor, never half of one
        self._saved = self.last_id
