"""Synthetic camera: procedurally generated parts with their true label, deterministic by seed."""

from __future__ import annotations

import numpy as np

from inspectd.camera.bank import FrameBank, Shot
from inspectd.camera.config import SyntheticConfig
from inspectd.camera.parts import make_part, random_kind, to_pixel_format


class SyntheticSource(FrameBank):
    name = "synthetic"

    def __init__(self, cfg: SyntheticConfig) -> None:
        super().__init__(cfg.pixel_format, cfg.rate_hz, software_trigger=cfg.software_trigger)
        self.cfg = cfg
        self._memory = np.empty(0, np.uint8)  # every frame of the bank is a view into this

    def _make_bank(self) -> list[Shot]:
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
        return [Shot(self._memory[i], "reject" if kind else "pass", {"kind": kind or "good"})
                for i, (_, kind) in enumerate(parts)]

    def host_buffers(self) -> list[np.ndarray]:
        return [self._memory] if self._memory.size else []
