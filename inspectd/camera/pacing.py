"""Frame pacing for sources that stand in for a free-running camera (synthetic, replay)."""

from __future__ import annotations

import time


class Pacer:
    """Releases one frame every 1/rate_hz seconds; never waits longer than the caller's timeout.
    After a stall it does not burst to catch up by more than one frame (a camera drops, it does not queue)."""

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
        self._next = max(self._next + self.period, time.monotonic() - self.period)
        return True
