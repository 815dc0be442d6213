"""Frame pacing for sources that stand in for a free-running camera (synthetic, replay)."""

from __future__ import annotations

import math
import time


class Pacer:
    """Releases one frame every 1/rate_hz seconds, on a fixed grid like a free-running camera's exposures; never
    waits longer than the caller's timeout. A caller late by a period or more gets one frame at once (the newest)
    and the next on the grid: the frames in between are dropped, as a camera's newest-only buffering drops them,
    never released as a burst (three at once after a start-up's warm-up overflowed a depth-2 queue)."""

    def __init__(self, rate_hz: float | None) -> None:
        self.period = 1.0 / rate_hz if rate_hz else 0.0
        self._next = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """True when the next frame is due (after sleeping for it); False if it is not due within `timeout`."""
        if not self.period:
            return True
        wait = self._next - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return False
        if wait > 0:
            time.sleep(wait)
        self._next += self.period
        late = time.monotonic() - self._next
        if late >= 0:
            self._next += self.period * (math.floor(late / self.period) + 1)
        return True
