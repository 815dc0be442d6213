"""The journal's ahead log: one line per accepted part and one per issued verdict, appended before either is
anywhere else, so a process killed with SIGKILL leaves a record of both.

A line is one write(2) to a file opened O_APPEND: it lands in the page cache whole or not at all, and the page
cache outlives the process (not a power cut: there is no fsync per part, that would put disk latency on the
cycle). Two generations: the writer thread rotates the current file to `.old` once it is large and the journal is
healthy, which drops the generation before it (parts accepted two rotations ago are long journaled). At start the
journal reads both, journals what is missing (see `Journal._recover`) and removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any


class AheadLog:
    def __init__(self, path: Path, rotate_bytes: int = 2_000_000) -> None:
        self.path = path
        self.old = path.with_name(path.name + ".old")
        self.rotate_bytes = rotate_bytes
        self.errors = 0
        self.last_error = ""  # '' while the latest append succeeded
        self.last_errno = 0
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()  # appends from several threads vs. rotate/close

    def read(self) -> list[dict[str, Any]]:
        """Every record in both generations, oldest first; a torn last line (power cut) is skipped."""
        out: list[dict[str, Any]] = []
        for f in (self.old, self.path):
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                continue
            for line in data.splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        out.append(rec)
        return out

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size

    def append(self, record: dict[str, Any]) -> bool:
        data = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return False
            try:
                os.write(self._fd, data)
            except OSError as e:
                self.errors += 1
                self.last_error = f"{self.path}: {e.strerror or e}"
                self.last_errno = e.errno or 0
                return False
            self._size += len(data)
        self.last_error = ""
        return True

    @property
    def large(self) -> bool:
        return self._size >= self.rotate_bytes

    def rotate(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            try:
                os.replace(self.path, self.old)
            finally:
                self.open()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def remove(self) -> None:
        """Both generations (everything in them is journaled)."""
        for f in (self.old, self.path):
            f.unlink(missing_ok=True)
