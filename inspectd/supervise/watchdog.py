"""Internal watchdog: finds a stage that has held one part too long; WATCHDOG=1 only while parts flow.

Two limits per stage, both read from the stage's stamp:
- flow_s: a stage holding one part longer than this (or an idle stage not polling for this long) is not
  moving parts. Keep-alives are withheld while any stage is like that, so systemd's WatchdogSec sees
  a hung stage, not only a dead process. An idle line (no triggers) still polls, so it keeps beating.
- stall_s: past this the stage is stalled. A hung Python thread cannot be killed, so the process logs the
  stage, the part in flight and every thread's stack, and exits with ExitCode.STALL; systemd restarts it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

import structlog

from inspectd.pipeline.stamps import StageStamp
from inspectd.supervise.systemd import Notifier

log = structlog.get_logger("inspectd.watchdog")


def thread_stacks() -> dict[str, str]:
    names = {t.ident: t.name for t in threading.enumerate()}
    return {names.get(tid, str(tid)): "".join(traceback.format_stack(frame))
            for tid, frame in sys._current_frames().items()}


@dataclass(frozen=True)
class Health:
    stalled: str | None = None  # the stage to blame for a stall (past stall_s), if any
    held: tuple[str, ...] = ()  # stages not moving parts (past flow_s)

    @property
    def flowing(self) -> bool:
        return self.stalled is None and not self.held


def assess(stamps: Mapping[str, StageStamp], now: float, flow_s: float, stall_s: float) -> Health:
    """Judge every stage by its stamp: busy with one part for how long, or idle and silent for how long."""
    def silent_for(s: StageStamp) -> float:
        return 0.0 if s.busy_since is not None else now - s.last_beat

    held = tuple(n for n, s in stamps.items() if s.stalled_for(now) > flow_s or silent_for(s) > flow_s)
    # A busy stage is the culprit before a silent one: a stage blocked handing a part to a hung neighbour
    # is idle by its stamp and silent, a victim. Among busy ones, the part held longest started the jam.
    busy = [(s.stalled_for(now), n) for n, s in stamps.items() if s.stalled_for(now) > stall_s]
    if busy:
        return Health(max(busy)[1], held)
    silent = next((n for n, s in stamps.items() if silent_for(s) > stall_s), None)  # also a thread that died
    return Health(silent, held)


def enable_crash_stacks(out: TextIO) -> None:
    """Dump every thread's stack on SIGABRT/SIGSEGV: systemd's WatchdogSec kills with SIGABRT."""
    if faulthandler.is_enabled():
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        faulthandler.enable(file=out, all_threads=True)


def write_stall_report(out: TextIO, stage: str, stamp: StageStamp, held_s: float) -> None:
    """Written synchronously: the process exits right after, before a queued log line would reach stdout."""
    try:
        out.write(f"inspectd: stage {stage!r} stalled on part {stamp.part_seq} for {held_s:.1f} s; "
                  "thread stacks follow\n")
        out.flush()
        faulthandler.dump_traceback(file=out, all_threads=True)
    except (OSError, ValueError, AttributeError):  # no file descriptor: fall back to Python's own formatting
        for name, stack in thread_stacks().items():
            out.write(f"--- thread {name}\n{stack}")
        out.flush()


class Watchdog(threading.Thread):
    def __init__(self, stamps: Mapping[str, StageStamp], stall_s: float, notifier: Notifier,
                 on_stall: Callable[[str, StageStamp], None], period_s: float | None = None,
                 flow_s: float | None = None, report_to: TextIO | None = None) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.stamps, self.stall_s, self.notifier, self.on_stall = stamps, stall_s, notifier, on_stall
        self.flow_s = min(1.0 if flow_s is None else flow_s, stall_s)
        # At least twice per WatchdogSec (sd_watchdog_enabled(3)), and often enough to see a stall on time.
        self.period_s = min(notifier.watchdog_interval_s or 1.0, stall_s / 4, 1.0) if period_s is None else period_s
        self.report_to = report_to or sys.stderr
        self.stalled: str | None = None
        self.keepalives = 0
        self.withheld = 0
        self._halt = threading.Event()

    def assess(self, now: float | None = None) -> Health:
        return assess(self.stamps, time.monotonic() if now is None else now, self.flow_s, self.stall_s)

    def run(self) -> None:
        enable_crash_stacks(sys.stderr)  # process-wide and kept for the process's life: never a file we may close
        was_held: tuple[str, ...] = ()
        while not self._halt.wait(self.period_s):
            health = self.assess()
            if health.flowing:
                self.keepalives += self.notifier.watchdog()
            elif health.stalled is None:
                self.withheld += 1
            if health.held != was_held:
                if health.held:
                    log.warning("parts_not_flowing", stages=list(health.held), keepalives="withheld")
                else:
                    log.info("parts_flowing_again")
                was_held = health.held
            if health.stalled is None:
                continue
            stage = self.stalled = health.stalled
            stamp = self.stamps[stage]
            held_s = max(stamp.stalled_for(time.monotonic()), time.monotonic() - stamp.last_beat)
            log.critical("stage_stalled", stage=stage, part_seq=stamp.part_seq, stalled_s=round(held_s, 3),
                         limit_s=self.stall_s, stacks=thread_stacks())
            write_stall_report(self.report_to, stage, stamp, held_s)
            self.on_stall(stage, stamp)
            return

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(2.0)
