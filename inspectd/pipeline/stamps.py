"""Per-stage heartbeat stamps: the watchdog finds a stuck stage by the part it has held too long."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class StageStamp:
    name: str
    busy_since: float | None = None  # monotonic time the current part entered the stage; None when idle
    part_seq: int | None = None
    last_beat: float = field(default_factory=time.monotonic)  # any sign of life (also while idle-waiting)
    done: int = 0
    thread_id: int | None = None
    typical_s: float = 0.0  # moving average of the time one part takes here (admission pacing)

    def begin(self, seq: int) -> float:
        now = time.monotonic()
        self.part_seq, self.busy_since, self.last_beat = seq, now, now
        return now

    def end(self) -> float:
        now = time.monotonic()
        if self.busy_since is not None:
            took = now - self.busy_since
            self.typical_s = took if not self.done else 0.9 * self.typical_s + 0.1 * took
        self.busy_since, self.last_beat = None, now
        self.done += 1
        return now

    def idle_beat(self) -> None:
        self.last_beat = time.monotonic()
        if self.thread_id is None:
            self.thread_id = threading.get_ident()

    def stalled_for(self, now: float) -> float:
        """Seconds the current part has been in this stage (0 when idle)."""
        return 0.0 if self.busy_since is None else now - self.busy_since
