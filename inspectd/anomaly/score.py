"""Anomaly graph outputs -> findings: the score in its own units, a display heatmap and the top region.

Two formats (recipe `anomaly.format`):
- inspectd (`inspectd fit-anomaly`): `score` N x 1 = largest patch distance to the memory bank,
  `anomaly_map` N x 1 x H x W = patch distances upsampled to the input size (same units).
- anomalib (its ONNX export as it is): `pred_score` normalised by anomalib's post-processor,
  ((raw - threshold) / (max - min)) + 0.5 clipped to 0..1, so its own threshold sits at 0.5; `anomaly_map`
  normalised the same way with the pixel threshold. The recipe's rule then says min_score: 0.5.
In both, the map's boundary is the rule's threshold, which the overlay and the region use.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from inspectd.config.schema import ProductConfig
from inspectd.errors import BadOutput
from inspectd.types import Findings

CLASS = "anomaly"


def heat(amap: np.ndarray, boundary: float, base: float) -> np.ndarray:
    """0..1 for the overlay: clear up to `base` (what a typical good part reaches), fully hot at the boundary."""
    return np.clip((amap - base) / max(boundary - base, 1e-9), 0.0, 1.0).astype(np.float32)


def top_region(amap: np.ndarray, boundary: float) -> tuple[float, float, float, float]:
    """(x, y, w, h) as fractions of the map: the connected area around the map's peak that is at or above
    the boundary (a reject), else at or above 80 % of the peak (where a pass came closest)."""
    peak = float(amap.max())
    level = boundary if peak >= boundary else 0.8 * peak
    mask = (amap >= level).astype(np.uint8)
    _, labels, boxes, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
    bx, by, bw, bh, _ = boxes[labels[y, x]]
    h, w = amap.shape
    return bx / w, by / h, bw / w, bh / h


class AnomalyPostprocessor:
    def __init__(self, product: ProductConfig) -> None:
        self.score_output = product.model.scores_output
        self.map_output = product.model.heatmap_output
        self.boundary = min(product.threshold(r) for r in product.rules)
        cal = product.anomaly.calibration if product.anomaly is not None else None
        # The overlay starts where a typical good part's worst patch is (recorded at calibration); without a
        # record (anomalib), at half the boundary.
        self.base = min(cal.good.p50, 0.9 * self.boundary) if cal is not None else 0.5 * self.boundary

    def __call__(self, outputs: dict[str, np.ndarray]) -> Findings:
        raw = np.asarray(outputs[self.score_output], dtype=np.float32).reshape(-1)
        if raw.size != 1:
            raise BadOutput(f"output {self.score_output!r} has {raw.size} values; an anomaly score is one")
        score = float(raw[0])
        if not math.isfinite(score):  # never a pass (NaN >= threshold is False): at start exit 3, in a run bad_output
            raise BadOutput(f"output {self.score_output!r} is {score}: not a finite anomaly score")
        extra: dict[str, object] = {}
        if self.map_output is not None and self.map_output in outputs:
            amap = np.asarray(outputs[self.map_output], np.float32).squeeze()
            if amap.ndim != 2 or not np.isfinite(amap).all():
                raise BadOutput(f"output {self.map_output!r}: expected one finite H x W map, got shape "
                                 f"{amap.shape}")
            extra["heatmap"] = heat(amap, self.boundary, self.base)
            extra["region"] = top_region(amap, self.boundary)
        return Findings(scores={CLASS: score}, top_class=CLASS, extra=extra)

