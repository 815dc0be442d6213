"""RUN_EPOCH and RESULT_SEQ that survive restarts: a small state file next to the journal.

A PLC latches a result when (RUN_EPOCH, RESULT_SEQ) differs from the pair it latched last. RUN_EPOCH
(1..65535) goes up by one with every daemon start; RESULT_SEQ (1..65535) also continues where the last
process stopped, so even a PLC that only compares RESULT_SEQ never sees a new process's first result as
one it already latched. The file holds the epoch and the highest sequence number handed out or reserved:
numbers are reserved in blocks ahead of use, so after a kill -9 the next process skips the unused rest of
the block but never reuses a number. Blocks are renewed on a helper thread when half used, so the link
never waits for the disk in steady state.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import structlog

log = structlog.get_logger("inspectd.plc.runstate")

SEQ_BLOCK = 1000  # sequence numbers reserved per write (a kill -9 skips at most this many)
U16_MAX = 0xFFFF


def wrap(n: int) -> int:
    """1..65535 counting: 65535 + 1 -> 1 (0 stays reserved for 'none yet')."""
    return (n - 1) % U16_MAX + 1


def state_path_for(journal_path: Path) -> Path:
    """The run-state file of a station: beside its journal, in the state directory systemd keeps."""
    return journal_path.with_name(journal_path.name + ".plc-run.json")


class RunState:
    """This process's RUN_EPOCH and its RESULT_SEQ source. `next_seq` is called from one thread (the link)."""

    def __init__(self, path: Path | None, block: int = SEQ_BLOCK) -> None:
        self.path = path
        self._block = block
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        prev_epoch, prev_seq = self._read()
        self.epoch = wrap(prev_epoch + 1)
        self._last = prev_seq  # the last number a previous process may have shown
        self._reserved_upto = 0  # how many numbers after _last are reserved on disk
        self._reserve(block)  # before the first result: synchronous (start-up, not the cycle)

    def _read(self) -> tuple[int, int]:
        if self.path is None:  # tools and tests without a state dir: RESULT_SEQ from 1, RUN_EPOCH from the clock
            return int(time.time()) % U16_MAX, 0
        try:
            data = json.loads(self.path.read_text())
            epoch, seq = int(data["run_epoch"]), int(data["seq_reserved"])
            if not (0 <= epoch <= U16_MAX and 0 <= seq <= U16_MAX):
                raise ValueError(f"out of range: {data}")
            return epoch, seq
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, KeyError, TypeError) as e:
            # A damaged file must not stop the line: start from the clock, which is unlikely to repeat a pair.
            log.error("plc_run_state_unreadable", path=str(self.path), error=str(e))
            t = int(time.time())
            return t % U16_MAX, (t * 7) % U16_MAX

    def _write(self, seq_reserved: int) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)  # the journal's directory, made before the journal
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"run_epoch": self.epoch, "seq_reserved": seq_reserved}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself must survive a power cut
        finally:
            os.close(dfd)

    def _reserve(self, n: int) -> None:
        with self._lock:
            upto = self._reserved_upto + n
            last = self._last
        try:
            self._write(wrap(last + upto))
        except OSError as e:  # not fatal: the epoch still changes per start
            log.error("plc_run_state_not_written", path=str(self.path), error=str(e))
        with self._lock:
            self._reserved_upto = max(self._reserved_upto, upto - (self._last - last) % U16_MAX)

    def next_seq(self) -> int:
        """The next RESULT_SEQ (1..65535); never one a previous process may have shown."""
        with self._lock:
            pending = self._reserved_upto <= 0  # the helper fell a whole block behind: wait for the disk this once
        if pending:
            if self._writer is not None:
                self._writer.join()
            self._reserve(self._block)
        with self._lock:
            self._last = wrap(self._last + 1)
            self._reserved_upto -= 1
            renew = self._reserved_upto == self._block // 2 and (self._writer is None or not self._writer.is_alive())
            seq = self._last
        if renew:
            self._writer = threading.Thread(target=self._reserve, args=(self._block,), name="plc-runstate",
                                            daemon=True)
            self._writer.start()
        return seq

    @property
    def last_seq(self) -> int:
        return self._last
