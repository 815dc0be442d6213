"""The journal writer gathers verdicts that arrive close together into one transaction (Journal.linger_s): one
commit per verdict cost more CPU per part than the demo model's inference. Every row still lands, in order, and
close() writes what is still gathering."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from inspectd.journal import Journal
from tests.test_journal_integrity import verdict
from tests.waiting import wait_until


class CountingJournal(Journal):
    """The real journal, counting its transactions."""

    transactions = 0

    def _write(self, rows):  # type: ignore[no-untyped-def]
        if rows:
            self.transactions += 1
        return super()._write(rows)


def test_a_burst_of_verdicts_shares_few_transactions(tmp_path: Path) -> None:
    j = CountingJournal(tmp_path / "j.sqlite", linger_s=0.5)
    j.start()
    try:
        for s in range(1, 51):  # a verdict every millisecond: the writer would wake for each one
            j.submit(verdict(s))
            time.sleep(0.001)
        wait_until(lambda: j.written == 50, timeout=30, what="50 rows written")
        assert j.transactions <= 5  # one per verdict without gathering
    finally:
        j.close()
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert [s for (s,) in db.execute("SELECT seq FROM verdicts ORDER BY rowid")] == list(range(1, 51))


def test_close_writes_the_verdicts_still_gathering(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", linger_s=30.0)  # longer than the test: only close() can write them
    j.start()
    for s in range(1, 4):
        j.submit(verdict(s))
    j.close()
    assert j.written == 3
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT count(*) FROM verdicts").fetchone() == (3,)
