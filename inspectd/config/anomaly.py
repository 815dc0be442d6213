"""Recipe keys of anomaly products (`kind: anomaly`): how the score reads, the sensitivity, the calibration.

An anomaly model is taught on good parts only and gives one score per part (higher = less like the good
parts) plus an anomaly map. Rules compare that score with thresholds in the score's own units.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspectd.config.base import Model


class ScoreStats(Model):
    """Anomaly scores of good parts, as measured by the exported graph."""

    n: int = Field(..., ge=0, description="good parts scored")
    mean: float = Field(..., description="mean score")
    std: float = Field(..., ge=0, description="standard deviation")
    min: float = Field(..., description="lowest score")
    p50: float = Field(..., description="median")
    p99: float = Field(..., description="99th percentile")
    max: float = Field(..., description="highest score")


class Calibration(Model):
    """What `inspectd fit-anomaly` measured on held-out good parts. A record: the rule's min_score decides."""

    quantile: float = Field(..., gt=0, lt=1, description="quantile of the good parts' scores the threshold starts from")
    margin: float = Field(..., ge=0, description="threshold = (1 + margin) x that quantile")
    threshold: float = Field(..., gt=0, description="the calibrated threshold, in score units")
    good: ScoreStats = Field(..., description="scores of the held-out good parts (not used to build the bank)")
    train: ScoreStats | None = Field(None, description="scores of the parts the memory bank was built from")
    false_rejects: dict[float, float] = Field(
        default_factory=dict,
        description="sensitivity -> fraction of the held-out good parts that would be rejected at it")
    bank: int = Field(0, ge=0, description="memory bank entries (patch features kept by the coreset)")
    images: int = Field(0, ge=0, description="good parts the memory bank was built from")


class AnomalyConfig(Model):
    format: Literal["inspectd", "anomalib"] = Field(
        "inspectd",
        description="inspectd: score = largest patch distance to the memory bank (units of the feature space), "
        "from `inspectd fit-anomaly`; anomalib: an anomalib ONNX export as it is, pred_score normalised to 0..1 "
        "with its threshold at 0.5")
    sensitivity: float = Field(
        1.0, ge=0.25, le=4.0,
        description="1.0 = as calibrated; above 1 rejects more parts, below 1 fewer, without refitting: a rule "
        "rejects at base + (min_score - base) / sensitivity, base = the median good score of the calibration "
        "(0 without one). calibration.false_rejects says what each value does on the held-out good parts")
    calibration: Calibration | None = Field(None, description="written by inspectd fit-anomaly; informative")

    def threshold(self, min_score: float) -> float:
        """Where a rule with `min_score` rejects at this sensitivity. Anchored at the typical good score, so
        sensitivity 2 puts the threshold halfway between a typical good part and the calibrated threshold."""
        base = self.calibration.good.p50 if self.calibration is not None else 0.0
        return base + (min_score - base) / self.sensitivity
