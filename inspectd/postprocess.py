"""Raw model outputs -> named class probabilities (and the defect map when the model has one);
anomaly recipes (kind: anomaly) -> their score, see inspectd/anomaly/score.py.

A verdict may only rest on finite numbers of the shape the recipe declares: anything else raises BadOutput,
which the decide stage turns into the fail-safe `bad_output` (never a pass: `NaN >= min_score` is False).
"""

from __future__ import annotations

import math

import numpy as np

from inspectd.anomaly.score import AnomalyPostprocessor
from inspectd.config.schema import ProductConfig
from inspectd.errors import BadOutput
from inspectd.types import Findings

__all__ = ["BadOutput", "Postprocessor", "sigmoid", "softmax"]

FEW_CLASSES = 32  # up to here a score check in Python beats numpy's per-call cost


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))  # exp overflow for z << 0 gives inf, and 1/(1+inf) = 0 is the right answer


def identity(z: np.ndarray) -> np.ndarray:
    return z


def _as_float32(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in outputs:
        raise BadOutput(f"no output {name!r} (got: {', '.join(outputs) or 'none'})")
    value = outputs[name]
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        return value  # the usual case, at no cost
    try:
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, caught below
            return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise BadOutput(f"output {name!r} is not numeric: {e}") from None


def _require_finite(name: str, values: np.ndarray) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        bad = values[~finite]
        raise BadOutput(f"output {name!r} has {bad.size} non-finite of {values.size} values "
                        f"(nan={int(np.isnan(bad).sum())}, inf={int(np.isinf(bad).sum())})")


class Postprocessor:
    def __init__(self, product: ProductConfig) -> None:
        self.classes = product.classes
        self.scores_output = product.model.scores_output
        self.heatmap_output = product.model.heatmap_output
        self.activation = {"softmax": softmax, "sigmoid": sigmoid, "none": identity}[product.model.activation]
        self.anomaly = AnomalyPostprocessor(product) if product.kind == "anomaly" else None

    def __call__(self, outputs: dict[str, np.ndarray]) -> Findings:
        """Raises BadOutput for a missing, mis-shaped or non-finite scores output (or non-finite heatmap)."""
        if self.anomaly is not None:
            return self.anomaly(outputs)
        raw = _as_float32(outputs, self.scores_output).reshape(-1)
        if raw.size != len(self.classes):
            raise BadOutput(f"output {self.scores_output!r} has {raw.size} values for {len(self.classes)} classes")
        if raw.size <= FEW_CLASSES:  # plain floats check faster than a numpy call
            if not all(map(math.isfinite, raw.tolist())):
                _require_finite(self.scores_output, raw)  # raises, counting what was wrong
            probs = self.activation(raw).tolist()
            finite = all(map(math.isfinite, probs))
            top = max(range(len(probs)), key=probs.__getitem__)
        else:  # an ImageNet-sized head: one vectorised pass each, ~10x fewer microseconds at 1000 classes
            _require_finite(self.scores_output, raw)
            p = self.activation(raw)
            finite, top, probs = bool(np.isfinite(p).all()), int(np.argmax(p)), p.tolist()
        if not finite:  # finite in, finite out; checked, not assumed
            raise BadOutput(f"output {self.scores_output!r}: {self.activation.__name__} gave non-finite "
                            f"values: {probs[:8]}")
        scores = dict(zip(self.classes, probs, strict=True))
        extra = {}
        if self.heatmap_output and self.heatmap_output in outputs:
            # Not a rule input, but a model that gives NaN anywhere is broken: its scores are not trusted either.
            heat = _as_float32(outputs, self.heatmap_output)
            _require_finite(self.heatmap_output, heat)
            extra["heatmap"] = sigmoid(heat.squeeze())
        return Findings(scores=scores, top_class=self.classes[top], extra=extra)
