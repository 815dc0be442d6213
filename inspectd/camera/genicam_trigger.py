"""The three ways a GenICam camera is triggered, one strategy each (`camera.trigger`).

- free_run: the camera streams; every grab takes the next frame. A lost camera makes grab wait its timeout (the
  acquire stage loops on grab), and a stall is judged by time since the last frame (slow frame rates time out).
- software: `fire` executes TriggerSoftware (frames made before it are discarded as extra); a lost camera answers
  at once (the part gets `camera_lost`); N timeouts in a row declare it lost.
- hardware: a line fires the camera; a pump thread takes frames off the stream as they arrive and `grab` matches
  them to the PLC's triggers in order (a frame older than hardware_max_age_s had no part behind it).

A mode works through its source (lock, fetch, stats, loss handling); the source owns connection and recovery.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

from inspectd.camera.config import GenICamConfig
from inspectd.camera.genicam_features import FeatureValue
from inspectd.types import Frame

if TYPE_CHECKING:
    from inspectd.camera.genicam import GenICamSource

log = structlog.get_logger("inspectd.camera.genicam")

PUMP_POLL_S = 0.05  # hardware trigger: longest the pump holds the lock waiting for a frame


def trigger_features(cfg: GenICamConfig, node_map: Any) -> dict[str, FeatureValue]:
    """The SFNC settings that make the camera's trigger match `cfg.trigger`."""
    out: dict[str, FeatureValue] = {}
    if hasattr(node_map, "TriggerSelector"):
        out["TriggerSelector"] = "FrameStart"
    if cfg.trigger == "free_run":
        if hasattr(node_map, "TriggerMode"):  # a camera without triggers free-runs anyway
            out["TriggerMode"] = "Off"
        return out
    out["TriggerSource"] = "Software" if cfg.trigger == "software" else cfg.trigger_line
    if cfg.trigger == "hardware" and cfg.trigger_activation is not None:
        out["TriggerActivation"] = cfg.trigger_activation
    out["TriggerMode"] = "On"
    return out


class TriggerMode:
    """Base: frames are fetched from the stream when grabbed (free-run and software trigger)."""

    def __init__(self, src: GenICamSource) -> None:
        self.src = src

    def start(self) -> None:
        """After open: threads the mode needs."""

    def stop(self) -> None:
        """At close, before the acquirer is torn down."""

    def fire(self) -> None:
        """A part wants a frame now (only the software trigger acts)."""

    def grab(self, timeout: float) -> Frame | None:
        src = self.src
        with src._lock:
            if not src.connected:
                return None
            frame = src._fetch(timeout)
            if frame is None:
                if src.connected:
                    src._timed_out()
                return None
        return src._delivered(frame)

    def grab_while_lost(self, timeout: float) -> None:
        """Triggered modes answer at once while the camera is lost (the part gets `camera_lost`)."""

    def loss_after_timeout(self) -> str | None:
        """Why the timeouts so far declare the camera lost, or None (the register probe decides)."""
        src = self.src
        if src._timeouts_in_row >= src.cfg.lost_after_timeouts:
            return f"{src._timeouts_in_row} grab timeouts in a row"
        return None

    def discard_waiting(self) -> None:
        """Frames taken but not yet matched belong to triggers already answered (reconnect, product switch)."""

    def wake(self) -> None:
        """The camera was declared lost: a grab waiting for a frame answers now."""


class FreeRun(TriggerMode):
    def grab_while_lost(self, timeout: float) -> None:
        self.src._connected.wait(timeout)  # the acquire stage loops on grab: don't spin

    def loss_after_timeout(self) -> str | None:
        stalled = time.monotonic() - self.src._last_frame_t  # idle polls time out at slow frame rates: judge by time
        return f"no frame for {stalled:.1f} s" if stalled > self.src.cfg.free_run_stall_s else None


class SoftwareTrigger(TriggerMode):
    def fire(self) -> None:
        """TriggerSoftware.execute(). Frames already waiting were made before this trigger: they are discarded
        and counted as extra, so a late frame is never matched to this part."""
        src = self.src
        if not src.connected:
            return  # lost: grab answers None at once
        with src._lock:
            if not src.connected:
                return
            try:
                src._drain()
                src._ia.remote_device.node_map.TriggerSoftware.execute()
                src.stats.triggers += 1
            except Exception as e:
                src._declare_lost(f"trigger failed: {type(e).__name__}: {e}")


class HardwareTrigger(TriggerMode):
    """Frames are matched to the PLC's triggers in order; the PLC's trigger may be read before or after its frame
    arrives, so a pump thread stamps each frame with its host arrival time as it comes."""

    def __init__(self, src: GenICamSource) -> None:
        super().__init__(src)
        self._arrival = threading.Condition()  # guards _arrived
        self._arrived: deque[Frame] = deque()
        self._pump_thread: threading.Thread | None = None

    def start(self) -> None:
        self._pump_thread = threading.Thread(target=self._pump, name="genicam-pump", daemon=True)
        self._pump_thread.start()

    def stop(self) -> None:
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=30)  # the source's closing flag ends it
        self._pump_thread = None

    def grab(self, timeout: float) -> Frame | None:
        """A frame that arrived longer than hardware_max_age_s before this trigger was read came from a line
        pulse with no part behind it: discarded, counted as extra."""
        src = self.src
        t_call = time.monotonic()
        end = t_call + timeout
        frame = None
        with self._arrival:
            while True:
                while self._arrived and self._arrived[0].t_grab < t_call - src.cfg.hardware_max_age_s:
                    stray = self._arrived.popleft()
                    src.stats.extra += 1
                    log.warning("camera_extra_frame", frame_id=stray.frame_id, reason="line pulse with no part")
                if self._arrived:
                    frame = self._arrived.popleft()
                    break
                left = end - time.monotonic()
                if left <= 0 or not src.connected:
                    break
                self._arrival.wait(left)
        if frame is None:
            if src.connected:
                with src._lock:
                    if src.connected:
                        src._timed_out()
            return None
        return src._delivered(frame)

    def _pump(self) -> None:
        """Take frames off the stream as they arrive. Bounded: beyond num_buffers waiting, the oldest is extra."""
        src = self.src
        while not src._closing.is_set():
            if not src._connected.wait(0.1):
                continue
            with src._lock:
                frame = src._fetch(PUMP_POLL_S) if src.connected else None
            if frame is None:
                continue
            with self._arrival:
                if len(self._arrived) >= src.cfg.num_buffers:
                    self._arrived.popleft()
                    src.stats.extra += 1
                self._arrived.append(frame)
                self._arrival.notify()

    def discard_waiting(self) -> None:
        with self._arrival:
            self.src.stats.extra += len(self._arrived)
            self._arrived.clear()

    def wake(self) -> None:
        with self._arrival:
            self._arrival.notify_all()


MODES: dict[str, type[TriggerMode]] = {"free_run": FreeRun, "software": SoftwareTrigger, "hardware": HardwareTrigger}
