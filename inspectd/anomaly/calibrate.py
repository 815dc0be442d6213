"""Threshold of an anomaly recipe from held-out good parts' scores.

threshold = (1 + margin) x the `quantile` of the good scores (defaults 0.995 and 0.05). The quantile
sets how many good parts would land at or above the threshold on parts like the calibration set
(0.5 %); the margin covers good parts the calibration set did not show. A quantile of few scores is
not a quantile: below ~200 parts the 99.5th percentile is simply their largest score, and fresh good
parts exceed it more often than the figure suggests, so `fit-anomaly` warns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inspectd.config.anomaly import Calibration, ScoreStats

QUANTILE = 0.995
MARGIN = 0.05
SENSITIVITIES = (0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)  # the table a technician reads before moving it
FEW_PARTS = 200


def stats(scores: Sequence[float] | np.ndarray) -> ScoreStats:
    s = np.asarray(scores, np.float64)
    if s.size == 0:
        raise ValueError("no scores")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} non-finite score(s): the model is broken")
    r = lambda v: round(float(v), 6)  # noqa: E731 - the recipe is for people: 6 digits
    return ScoreStats(n=int(s.size), mean=r(s.mean()), std=r(s.std()), min=r(s.min()),
                      p50=r(np.percentile(s, 50)), p99=r(np.percentile(s, 99)), max=r(s.max()))


def false_rejects(scores: np.ndarray, threshold: float, base: float,
                  sensitivities: Sequence[float] = SENSITIVITIES) -> dict[float, float]:
    """Fraction of `scores` a rule at `threshold` would reject, per sensitivity (AnomalyConfig.threshold's
    rule: anchored at `base`, the good parts' median)."""
    return {s: round(float(np.mean(scores >= base + (threshold - base) / s)), 6) for s in sensitivities}


def calibrate(good: Sequence[float] | np.ndarray, *, quantile: float = QUANTILE, margin: float = MARGIN,
              bank: int = 0, images: int = 0, train: Sequence[float] | None = None) -> Calibration:
    s = np.asarray(good, np.float64)
    st = stats(s)
    q = float(np.quantile(s, quantile))
    threshold = round((1.0 + margin) * q, 6)
    if threshold <= 0:
        raise ValueError(f"threshold {threshold} from good scores {st}: all good parts scored 0?")
    return Calibration(quantile=quantile, margin=margin, threshold=threshold, good=st,
                       train=stats(train) if train is not None and len(train) else None,
                       false_rejects=false_rejects(s, threshold, st.p50), bank=bank, images=images)
