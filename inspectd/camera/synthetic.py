"""Synthetic camera: procedurally generated parts with their true label, deterministic by seed."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import numpy as np

from inspectd.camera.config import SyntheticConfig
from inspectd.camera.pacing import Pacer
from inspectd.camera.parts import make_part, random_kind, to_pixel_format
from inspectd.types import Frame


class SyntheticSource:
    name = "synthetic"

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self._bank: list[tuple[np.ndarray, str, str]] = []  # (image, truth, kind)
        self._memory = np.empty(0, np.uint8)  # every frame of the bank is a view into this
        self._i = 0
        self._pacer = Pacer(None)
        self._fired = threading.Event()
        self._open = False

    def open(self) -> None:
        rng = np.random.default_rng(self.cfg.seed)
        parts = []
        for _ in range(self.cfg.bank):
            kind = random_kind(rng, self.cfg.defect_rate)
            mono, _ = make_part(rng, self.cfg.size, kind)
            parts.append((to_pixel_format(mono, self.cfg.pixel_format), kind))
        # one block for the whole bank, frames are views into it: GPU preprocessing pins it once and copies
        # frames to the device straight from here (no staging copy)
        self._memory = np.stack([image for image, _ in parts])
        self._memory.setflags(write=False)  # frames are shared by every lap of the bank
        self._bank = [(self._memory[i], "reject" if kind else "pass", kind or "good")
                      for i, (_, kind) in enumerate(parts)]
        self._pacer = Pacer(self.cfg.rate_hz)
        self._open = True

    def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    def fire(self) -> None:
        self._fired.set()

    def apply_features(self, features: Mapping[str, object]) -> None:
        return None  # nothing to set on a synthetic camera

    def host_buffers(self) -> list[np.ndarray]:
        return [self._memory] if self._memory.size else []

    def sample(self) -> Frame | None:
        if not self._bank:
            return None
        image, _, kind = self._bank[0]
        return Frame(image=image, pixel_format=self.cfg.pixel_format, t_grab=time.monotonic(), meta={"kind": kind})

    def grab(self, timeout: float) -> Frame | None:
        if not self._open:
            return None
        if self.cfg.software_trigger:
            if not self._fired.wait(timeout):
                return None
            self._fired.clear()
        elif not self._pacer.wait(timeout):
            return None
        image, truth, kind = self._bank[self._i % len(self._bank)]
        frame_id = self._i
        self._i += 1
        return Frame(image=image, pixel_format=self.cfg.pixel_format, t_grab=time.monotonic(),
                     frame_id=frame_id, truth=truth, meta={"kind": kind})
