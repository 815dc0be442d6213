"""Faults the line must hear about: the camera is gone, the model fails, parts miss their deadline.

`FaultMonitor` is a verdict sink (it sees the ordered verdict stream) plus a look at the source. The
daemon maps its `fault()` to the PLC's ERROR_CODE (1 camera, 2 model, 3 timeout) and drops READY with
it, so a line stops feeding parts into a station that can only answer fail-safe.

- camera: the source reports itself disconnected (held until it is back), or RUN consecutive parts
  got `camera_lost` / `no_frame`;
- model: RUN consecutive parts got `stage_error` / `bad_output` (no valid model output);
- timeout: RUN consecutive parts got `deadline`.
A run-triggered fault holds for HOLD_S after its last failing part and then clears, so READY returns
and the next parts show whether it persists (while READY is low no part can prove it fixed).
"""

from __future__ import annotations

import threading
import time
from enum import Enum

from inspectd.camera.base import Source
from inspectd.types import Outcome, Part, Verdict

RUN = 3  # consecutive failing parts that make a fault
HOLD_S = 2.0  # a run-triggered fault stays this long after its last failing part


class Fault(str, Enum):
    CAMERA = "camera"
    MODEL = "model"
    TIMEOUT = "timeout"


_REASONS: dict[str, Fault] = {
    "camera_lost": Fault.CAMERA, "no_frame": Fault.CAMERA,
    "stage_error": Fault.MODEL, "bad_output": Fault.MODEL,
    "deadline": Fault.TIMEOUT,
}


class FaultMonitor:
    def __init__(self, source: Source, run: int = RUN, hold_s: float = HOLD_S) -> None:
        self._source, self._run, self._hold = source, run, hold_s
        self._lock = threading.Lock()
        self._streak: tuple[Fault | None, int] = (None, 0)  # the fault of the latest parts and how many in a row
        self._held: dict[Fault, float] = {}  # fault -> monotonic time it clears
        self.raised: dict[Fault, int] = {f: 0 for f in Fault}  # times each fault was raised (metrics, tests)

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        fault = _REASONS.get(verdict.reason) if verdict.outcome is Outcome.FAILSAFE else None
        with self._lock:
            kind, n = self._streak
            if fault is None:
                if verdict.outcome is not Outcome.FAILSAFE:
                    self._streak = (None, 0)  # a real verdict: the chain is fine again
                return
            n = n + 1 if fault is kind else 1
            self._streak = (fault, n)
            if n >= self._run:
                if fault not in self._held or self._held[fault] < time.monotonic():
                    self.raised[fault] += 1
                self._held[fault] = time.monotonic() + self._hold

    def fault(self, now: float | None = None) -> Fault | None:
        """The fault to report now, worst first: camera, model, timeout; None when healthy."""
        if not self._source.connected:
            return Fault.CAMERA
        now = time.monotonic() if now is None else now
        with self._lock:
            for f in Fault:
                if self._held.get(f, 0.0) > now:
                    return f
        return None
