"""The console's VerdictSink: keeps the latest frame (at most `fps` a second) and recent latencies.

`submit` runs on the verdict thread under the bus lock, so it only stores references: one monotonic read, a
deque append and, a few times a second, one attribute store. Downscaling, drawing and JPEG encoding happen on
the console's own thread (`render_live`), never on the hot path.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from inspectd.archive import roi_box, to_bgr8
from inspectd.config.schema import Roi
from inspectd.types import Frame, Outcome, Part, Verdict

LIVE_WIDTH = 480  # pixels across the live image: a tablet's half screen; ~15-30 kB of JPEG


@dataclass(frozen=True)
class Shot:
    """One part the live view may show: references only (frames own their pixels; nothing is copied)."""

    verdict: Verdict
    frame: Frame | None
    heatmap: Any
    roi: Roi | None


class LiveFeed:
    """A VerdictSink for the console. Never blocks, never allocates more than a bounded deque."""

    def __init__(self, fps: float = 2.0, latencies: int = 2048) -> None:
        self.period = 1.0 / fps if fps > 0 else float("inf")
        self.latest: Shot | None = None
        self.shots = 0  # bumped with each new Shot: the renderer's "is there something new"
        self.latency_ms: deque[float] = deque(maxlen=latencies)  # append/copy are atomic under the GIL
        self._next_t = 0.0

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        self.latency_ms.append(verdict.latency_ms)
        now = time.monotonic()
        # A reject or fail-safe is always worth showing, passes at most `fps` a second.
        if now < self._next_t and verdict.outcome is Outcome.PASS:
            return
        if now < self._next_t - self.period:  # still rate-limited: at most 2x fps even on a run of rejects
            return
        self._next_t = max(now, self._next_t) + self.period
        frame = part.frame if part is not None else None
        findings = part.findings if part is not None else None
        runtime = part.runtime if part is not None else None
        self.latest = Shot(verdict, frame, findings.extra.get("heatmap") if findings is not None else None,
                           runtime.product.preprocess.roi if runtime is not None else None)
        self.shots += 1


def render_live(shot: Shot, width: int = LIVE_WIDTH, quality: int = 75) -> bytes | None:
    """The frame downscaled to `width`, with the ROI and the heatmap drawn on it (console thread). None: no frame."""
    frame = shot.frame
    if frame is None:
        return None
    img = to_bgr8(frame.image, frame.pixel_format)
    h0, w0 = img.shape[:2]
    f = min(1.0, width / max(w0, 1))
    if f < 1.0:
        img = cv2.resize(img, (max(1, round(w0 * f)), max(1, round(h0 * f))), interpolation=cv2.INTER_AREA)
    elif img is frame.image:
        img = img.copy()  # drawing needs our own buffer
    img = np.ascontiguousarray(img)
    x, y, w, h = (round(c * f) for c in roi_box(shot.roi, w0, h0))
    w, h = min(w, img.shape[1] - x), min(h, img.shape[0] - y)
    if shot.heatmap is not None and w > 0 and h > 0:
        p = cv2.resize(np.asarray(shot.heatmap, np.float32).squeeze(), (w, h), interpolation=cv2.INTER_LINEAR)
        p = np.clip(p, 0.0, 1.0)
        colour = cv2.applyColorMap((p * 255).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)
        alpha = (0.6 * p)[..., None]
        region = img[y:y + h, x:x + w].astype(np.float32)
        img[y:y + h, x:x + w] = (region * (1 - alpha) + colour * alpha).astype(np.uint8)
    bad = shot.verdict.outcome is not Outcome.PASS
    cv2.rectangle(img, (x, y), (x + max(w, 1) - 1, y + max(h, 1) - 1), (0, 0, 255) if bad else (0, 200, 0), 2)
    if shot.verdict.region is not None:
        rx, ry, rw, rh = (round(c * f) for c in shot.verdict.region)
        cv2.rectangle(img, (rx, ry), (rx + rw - 1, ry + rh - 1), (255, 255, 255), 1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


def histogram(latency_ms: list[float], budget_ms: float, bins: int = 24) -> dict[str, Any]:
    """Latency counts in equal bins from 0 to 1.2x the budget (the last bin holds everything beyond)."""
    top = budget_ms * 1.2
    step = top / bins
    counts = [0] * bins
    for x in latency_ms:
        counts[min(bins - 1, max(0, int(x / step)))] += 1
    xs = sorted(latency_ms)
    p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else None
    p50 = xs[len(xs) // 2] if xs else None
    return {"budget_ms": budget_ms, "step_ms": step, "counts": counts, "n": len(xs), "p50_ms": p50, "p99_ms": p99,
            "over_budget": sum(1 for x in xs if x > budget_ms)}
