"""The journal's ahead log: one line per accepted part and one per issued verdict, recorded before either is
anywhere else, so a process killed with SIGKILL leaves a record of both.

The file is allocated up front (posix_fallocate, so a full disk shows at allocation, never as SIGBUS later) and
mapped shared into memory: appending is a memory copy under a lock, no system call, so a hot thread neither waits
for the disk nor gives up the GIL. The mapped pages belong to the page cache, which outlives the process (not a
power cut: there is no msync per part, that would put disk latency on the cycle). Unused space reads as NUL bytes.
Two generations: the writer thread rotates the current file to `.old` once it is `rotate_bytes` full and the
journal is healthy, which drops the generation before it (parts accepted two rotations ago are long journaled).
A burst that fills the file before a rotation grows it. At start the journal reads both, journals what is
missing (see `Journal._recover`) and removes them.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import threading
from pathlib import Path
from typing import Any

# Built once: json.dumps with keyword arguments builds a new encoder on every call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


class AheadLog:
    def __init__(self, path: Path, rotate_bytes: int = 2_000_000) -> None:
        self.path = path
        self.old = path.with_name(path.name + ".old")
        self.rotate_bytes = rotate_bytes
        self.errors = 0
        self.last_error = ""  # '' while the latest append succeeded
        self.last_errno = 0
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._pos = 0
        self._lock = threading.Lock()  # appends from several threads vs. rotate/close

    def read(self) -> list[list[Any]]:
        """Every record (a JSON list led by its kind) in both generations, oldest first; a torn line (power cut)
        or anything else that is not such a list is skipped."""
        out: list[list[Any]] = []
        for f in (self.old, self.path):
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                continue
            for line in data.split(b"\n"):
                line = line.strip(b"\0")
                if not line or b"\0" in line:
                    continue
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, list) and len(rec) >= 2 and isinstance(rec[0], str):
                        out.append(rec)
        return out

    def open(self) -> None:
        """A fresh, allocated, mapped file (raises OSError, e.g. ENOSPC)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.posix_fallocate(fd, 0, self.rotate_bytes)
            self._map = mmap.mmap(fd, self.rotate_bytes)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._pos = fd, 0

    def append(self, record: list[Any]) -> bool:
        data = (_ENCODE(record) + "\n").encode()
        with self._lock:
            if self._map is None:
                return self._failed(OSError(0, "ahead log closed"))
            end = self._pos + len(data)
            if end > len(self._map):
                try:
                    self._grow(end)
                except OSError as e:
                    return self._failed(e)
            self._map[self._pos:end] = data
            self._pos = end
        self.last_error = ""
        return True

    def _grow(self, need: int) -> None:
        assert self._fd is not None and self._map is not None
        size = max(2 * len(self._map), need)
        os.posix_fallocate(self._fd, 0, size)
        self._map.resize(size)

    def _failed(self, e: OSError) -> bool:
        self.errors += 1
        self.last_error = f"{self.path}: {e.strerror or e}"
        self.last_errno = e.errno or 0
        return False

    @property
    def large(self) -> bool:
        return self._pos >= self.rotate_bytes * 0.9

    def rotate(self) -> None:
        with self._lock:
            self._close()
            os.replace(self.path, self.old)
            self.open()

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def reopen(self) -> bool:
        """After a failed rotation left no file mapped: try again (the writer thread's probe). True if open."""
        with self._lock:
            if self._map is not None:
                return True
            try:
                self.open()
            except OSError as e:
                self._failed(e)
                return False
        return True

    def remove(self) -> None:
        """Both generations (everything in them is journaled)."""
        for f in (self.old, self.path):
            f.unlink(missing_ok=True)
