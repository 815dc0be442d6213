"""The hand-offs between stage threads: a bounded queue and the in-flight slots, both on C-level primitives.

`queue.Queue` and `threading.Semaphore` are written in Python: every put, get, acquire and release takes a
Condition (a lock, an owner check, a fresh waiter lock per wait) while holding the GIL. A part crosses three
queues and one slot, so that is a dozen Python-level lock dances per part, on the hot path of every stage thread,
each one taking the GIL from the inference thread when it wants it back. `queue.SimpleQueue` does put and a
(timed) get in C; a bounded queue is two of them: the items, and a pool of room tokens (put takes one, get gives
it back), so a full queue blocks its producer without any Python-level lock. Measured side by side
(tools/bench_overhead.py, README "Benchmark").

Counting: a token is taken before the item goes in and given back after it came out, so `qsize()` (from the
tokens) never under-counts what is queued: READY's room check (Admission) stays conservative.
"""

from __future__ import annotations

import queue
from typing import Generic, TypeVar

T = TypeVar("T")

_TOKEN = True


class Handoff(Generic[T]):
    """A bounded FIFO between two threads with `queue.Queue`'s interface as the pipeline uses it: put (blocking,
    with timeout, or put_nowait raising queue.Full), get (with timeout, or get_nowait raising queue.Empty),
    qsize, full, empty, maxsize."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a hand-off holds at least one item")
        self.maxsize = maxsize
        self._items: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._room: queue.SimpleQueue[bool] = queue.SimpleQueue()
        for _ in range(maxsize):
            self._room.put(_TOKEN)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Wait for room (at most `timeout` s) and queue `item`; queue.Full when there was none."""
        try:
            self._room.get(block, timeout)
        except queue.Empty:
            raise queue.Full from None
        self._items.put(item)

    def put_nowait(self, item: T) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The oldest item, waiting at most `timeout` s; queue.Empty when none came."""
        item = self._items.get(block, timeout)
        self._room.put(_TOKEN)
        return item

    def get_nowait(self) -> T:
        return self.get(block=False)

    def qsize(self) -> int:
        """Items queued, counting one whose put or get is under way."""
        return self.maxsize - self._room.qsize()

    def full(self) -> bool:
        return self._room.empty()

    def empty(self) -> bool:
        return self._items.empty()


class Slots:
    """A bounded counting semaphore (the in-flight limit): acquire/release like threading.BoundedSemaphore."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("at least one slot")
        self.n = n
        self._free: queue.SimpleQueue[bool] = queue.SimpleQueue()
        for _ in range(n):
            self._free.put(_TOKEN)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        try:
            self._free.get(blocking, timeout if blocking else None)
        except queue.Empty:
            return False
        return True

    def release(self) -> None:
        # A check-then-put, not atomic: two racing over-releases could both pass. A release without an acquire
        # is a bug either way; this catches it in the tests, as BoundedSemaphore would.
        if self._free.qsize() >= self.n:
            raise ValueError("Slots released too many times")
        self._free.put(_TOKEN)

    @property
    def free(self) -> int:
        return self._free.qsize()
