"""Raw model outputs -> named class probabilities (and the defect map when the model has one);
anomaly recipes (kind: anomaly) -> their score, see inspectd/anomaly/score.py."""

from __future__ import annotations

import numpy as np

from inspectd.anomaly.score import AnomalyPostprocessor
from inspectd.config.schema import ProductConfig
from inspectd.types import Findings


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class Postprocessor:
    def __init__(self, product: ProductConfig) -> None:
        self.classes = product.classes
        self.scores_output = product.model.scores_output
        self.heatmap_output = product.model.heatmap_output
        self.activation = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda z: z}[product.model.activation]
        self.anomaly = AnomalyPostprocessor(product) if product.kind == "anomaly" else None

    def __call__(self, outputs: dict[str, np.ndarray]) -> Findings:
        if self.anomaly is not None:
            return self.anomaly(outputs)
        raw = np.asarray(outputs[self.scores_output], dtype=np.float32).reshape(-1)
        if raw.size != len(self.classes):
            raise ValueError(f"output {self.scores_output!r} has {raw.size} values for {len(self.classes)} classes")
        probs = self.activation(raw)
        scores = {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
        extra = {}
        if self.heatmap_output and self.heatmap_output in outputs:
            extra["heatmap"] = sigmoid(np.asarray(outputs[self.heatmap_output], np.float32).squeeze())
        return Findings(scores=scores, top_class=max(scores, key=scores.__getitem__), extra=extra)
