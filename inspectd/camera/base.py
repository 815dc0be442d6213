"""The Source protocol every image source implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from inspectd.camera.genicam_features import FeatureValue
from inspectd.camera.genicam_stats import AcquisitionStats
from inspectd.types import Frame


@runtime_checkable
class Source(Protocol):
    """A camera or anything that acts like one.

    `grab` never blocks longer than its timeout: acquisition must not be able to
    hang the pipeline. `fire` issues a software trigger (sources that free-run
    ignore it and the next frame is taken).
    """

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def grab(self, timeout: float) -> Frame | None:
        """The next frame, or None when none arrived within `timeout` seconds."""
        ...

    def fire(self) -> None:
        """Software trigger: ask for one frame now."""
        ...

    def apply_features(self, features: Mapping[str, FeatureValue]) -> None:
        """Apply a product's camera settings between parts (no-op where there are none)."""
        ...

    def host_buffers(self) -> Sequence[np.ndarray]:
        """Long-lived memory every frame is a view of (empty if none): GPU preprocessing page-locks it and
        copies frames to the device straight from it."""
        ...

    def sample(self) -> Frame | None:
        """A frame of the current size and pixel format, without taking a part: what warm-up runs through the
        preprocessing kernels and the model before READY. None while that is not known (camera not connected)."""
        ...

    @property
    def connected(self) -> bool: ...


@runtime_checkable
class Finite(Protocol):
    """A source that can run out (a replay without loop) and may be able to wait for the pipeline."""

    @property
    def exhausted(self) -> bool:
        """Every frame has been served; no further grab delivers one."""
        ...

    @property
    def can_wait(self) -> bool:
        """Frames are made when asked (no free-running sensor behind): admission may hold them."""
        ...


@runtime_checkable
class CountsAcquisition(Protocol):
    """A source that counts what the camera delivered against what was asked of it (GenICam): exported as
    `inspectd_camera_*_total` so missed and extra frames and camera losses show on a dashboard."""

    stats: AcquisitionStats
