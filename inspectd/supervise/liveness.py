"""The main loop's heartbeat, read by /healthz (Patroni's liveness: "the last cycle finished recently").

The daemon's main loop beats every turn (it wakes at least every 0.2 s). A step that is known to take long
-- loading models at start or on reload, draining at shutdown -- says so first with `extend`, the way it
extends systemd's start timeout, so a liveness probe does not kill a daemon that is busy on purpose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

LIMIT_S = 10.0  # a main loop silent this long (and not in an announced long step) is overdue


@dataclass(frozen=True)
class LoopHealth:
    age_s: float  # time since the main loop's last turn
    overdue: bool
    limit_s: float  # when it becomes overdue, counted from the last turn (or the end of an announced step)


class Liveness:
    def __init__(self, limit_s: float = LIMIT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()  # construction counts as a turn: the daemon is starting
        self._busy_until = self._last

    def beat(self) -> None:
        """One turn of the main loop is done."""
        with self._lock:
            self._last = self._clock()
            self._busy_until = self._last

    def extend(self, seconds: float) -> None:
        """The loop is about to spend up to `seconds` in one step (it beats again when done)."""
        with self._lock:
            self._busy_until = max(self._busy_until, self._clock() + seconds)

    def check(self) -> LoopHealth:
        with self._lock:
            now, last, busy_until = self._clock(), self._last, self._busy_until
        deadline = max(last, busy_until) + self.limit_s
        return LoopHealth(age_s=now - last, overdue=now > deadline, limit_s=deadline - last)
