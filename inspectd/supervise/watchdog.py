"""Internal watchdog: finds a stage that has held one part too long; WATCHDOG=1 only while the line is healthy.

A hung Python thread cannot be killed, so a stall ends the process with ExitCode.STALL
after logging the stage, the part in flight and every thread's stack; systemd restarts us.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping

import structlog

from inspectd.pipeline.stamps import StageStamp
from inspectd.supervise.systemd import Notifier

log = structlog.get_logger("inspectd.watchdog")


def thread_stacks() -> dict[str, str]:
    names = {t.ident: t.name for t in threading.enumerate()}
    return {names.get(tid, str(tid)): "".join(traceback.format_stack(frame))
            for tid, frame in sys._current_frames().items()}


class Watchdog(threading.Thread):
    def __init__(self, stamps: Mapping[str, StageStamp], stall_s: float, notifier: Notifier,
                 on_stall: Callable[[str, StageStamp], None], period_s: float | None = None) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.stamps, self.stall_s, self.notifier, self.on_stall = stamps, stall_s, notifier, on_stall
        self.period_s = min(notifier.watchdog_interval_s or 1.0, stall_s / 4, 1.0) if period_s is None else period_s
        self.stalled: str | None = None
        self._halt = threading.Event()

    def check(self, now: float | None = None) -> str | None:
        """Name of a stalled stage, or None. A stage is alive if its current part is younger than stall_s;
        an idle stage must have beaten recently (its loop polls), which also catches a thread that died."""
        now = time.monotonic() if now is None else now
        # Busy stages first: a stage blocked handing a part to a stalled neighbour is a victim, not the culprit.
        for name, stamp in self.stamps.items():
            if stamp.stalled_for(now) > self.stall_s:
                return name
        return next((name for name, s in self.stamps.items() if now - s.last_beat > self.stall_s), None)

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            stage = self.check()
            if stage is None:
                self.notifier.watchdog()
                continue
            self.stalled = stage
            stamp = self.stamps[stage]
            log.critical("stage_stalled", stage=stage, part_seq=stamp.part_seq,
                         stalled_s=round(stamp.stalled_for(time.monotonic()), 3), stacks=thread_stacks())
            self.on_stall(stage, stamp)
            return

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(2.0)
