"""What the synthetic camera and image replay share: a bank of frames made at open, served in turn.

The subclass makes the bank (`_make_bank`); opening, closing, pacing to `rate_hz`, the optional software
trigger, running out (without `loop`) and building each Frame live here once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspectd.camera.pacing import Pacer
from inspectd.types import Frame


@dataclass(frozen=True)
class Shot:
    """One frame of the bank: its pixels (read-only, shared by every lap), true label and metadata."""

    image: np.ndarray
    truth: str | None
    meta: Mapping[str, Any] = field(default_factory=dict)


class FrameBank:
    name = "bank"

    def __init__(self, pixel_format: str, rate_hz: float | None, *, loop: bool = True,
                 software_trigger: bool = False) -> None:
        self.pixel_format, self.rate_hz = pixel_format, rate_hz
        self.loop, self.software_trigger = loop, software_trigger
        self._bank: list[Shot] = []
        self._i = 0
        self._pacer = Pacer(None)
        self._fired = threading.Event()
        self._open = False

    def _make_bank(self) -> list[Shot]:
        """The frames to serve; CameraError when there are none."""
        raise NotImplementedError

    def open(self) -> None:
        self._bank = self._make_bank()
        self._pacer = Pacer(self.rate_hz)
        self._open = True

    def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    @property
    def exhausted(self) -> bool:
        """Without `loop`: every frame has been served (the replay's folder is done)."""
        return self._open and not self.loop and self._i >= len(self._bank)

    @property
    def can_wait(self) -> bool:
        """Free-running without a rate, a frame is made when asked: the pipeline paces it instead of overrunning
        it (no `overflow` fail-safes). With rate_hz it stands in for a camera that does not wait."""
        return self.rate_hz is None and not self.software_trigger

    def fire(self) -> None:
        self._fired.set()  # only waited for with software_trigger; otherwise every grab delivers

    def apply_features(self, features: Mapping[str, object]) -> None:
        return None  # nothing to set: the bank is made at open

    def host_buffers(self) -> Sequence[np.ndarray]:
        return [shot.image for shot in self._bank]

    def sample(self) -> Frame | None:
        if not self._bank:
            return None
        shot = self._bank[0]
        return Frame(image=shot.image, pixel_format=self.pixel_format, t_grab=time.monotonic(), meta=shot.meta)

    def grab(self, timeout: float) -> Frame | None:
        if not self._open or (not self.loop and self._i >= len(self._bank)):
            time.sleep(timeout)  # no frame will come: the caller waits its timeout instead of spinning
            return None
        if self.software_trigger:
            if not self._fired.wait(timeout):
                return None
            self._fired.clear()
        elif not self._pacer.wait(timeout):
            return None
        shot = self._bank[self._i % len(self._bank)]
        frame_id = self._i
        self._i += 1
        return Frame(image=shot.image, pixel_format=self.pixel_format, t_grab=time.monotonic(),
                     frame_id=frame_id, truth=shot.truth, meta=shot.meta)
