"""Counting what the camera delivered against what was asked of it.

The camera numbers its frames (GenTL BUFFER_INFO_FRAMEID): a gap means frames the
camera made but the host never got (missed); a frame nobody triggered, or one
left over from an earlier trigger, is extra and must not be matched to a part.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class AcquisitionStats:
    frames: int = 0  # frames handed to the pipeline
    triggers: int = 0  # software triggers executed
    timeouts: int = 0  # grabs that got no frame within their timeout
    missed: int = 0  # gaps in the camera's frame ids
    extra: int = 0  # frames discarded because no trigger was waiting for them (late or untriggered)
    losses: int = 0  # times the camera was declared lost
    reconnects: int = 0  # successful reconnections after a loss
    reconnect_failures: int = 0
    feature_errors: int = 0  # feature writes that failed or did not read back
    pool_full: int = 0  # frames copied into fresh memory: every frame-pool slot was still held
    pool_misfit: int = 0  # frames copied into fresh memory: larger than a pool slot (or no pool)
    last_frame_id: int = -1
    last_camera_ts_ns: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class FrameAccounting:
    """Frame-id bookkeeping over one stream; `restart()` when a new stream starts (ids start again)."""

    def __init__(self, stats: AcquisitionStats) -> None:
        self.stats = stats
        self._lock = threading.Lock()
        self._prev: int | None = None

    def restart(self) -> None:
        with self._lock:
            self._prev = None

    def seen(self, frame_id: int, timestamp_ns: int) -> None:
        """Record a frame that came out of the stream (used or discarded)."""
        with self._lock:
            if self._prev is not None and frame_id > self._prev + 1:
                self.stats.missed += frame_id - self._prev - 1
            # a smaller id is a wrap (GigE Vision 1.x block ids are 16 bit) or a restarted stream: no gap known
            self._prev = frame_id
            self.stats.last_frame_id = frame_id
            self.stats.last_camera_ts_ns = timestamp_ns

