"""Production-shaped classifiers from the `onnx` wheel through the real backend: other tensor names, 1000
classes, softmax inside the model, and a conv head (N x C x 1 x 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from inspectd.config.load import load_config
from inspectd.config.schema import Rule
from inspectd.decide import decide
from inspectd.errors import ModelError
from inspectd.infer.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from inspectd.postprocess import Postprocessor
from tests.conftest import write_station

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
CLASSES = ["good", *(f"c{i}" for i in range(1, 1000))]


def product_for(tmp_path: Path, model: str, input_name: str, output: str, classes=CLASSES):
    st = write_station(tmp_path, product={
        "model": {"input": {"name": input_name}, "scores_output": output, "activation": "none",
                  "heatmap_output": None},
        "classes": classes, "rules": [{"name": "c1", "class": "c1", "min_score": 0.5}]}, model=LIGHT / model)
    return load_config(st).products["disc-a"]


@pytest.mark.parametrize("model,inp,out", [("light_shufflenet.onnx", "gpu_0/data_0", "gpu_0/softmax_1"),
                                           ("light_squeezenet.onnx", "data_0", "softmaxout_1")])
def test_real_topology_through_backend_postprocess_and_decide(tmp_path: Path, model: str, inp: str, out: str) -> None:
    product = product_for(tmp_path, model, inp, out)
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(type="onnxruntime"), product)
    backend.load()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    raw = backend.infer(x)[out].reshape(-1)  # softmax inside the model: activation none keeps it as it is
    findings = Postprocessor(product)(backend.infer(x))
    assert len(findings.scores) == 1000 and sum(findings.scores.values()) == pytest.approx(1.0, abs=1e-3)
    assert [findings.scores[c] for c in CLASSES] == pytest.approx(raw.tolist(), abs=1e-6)
    assert findings.top_class == CLASSES[int(raw.argmax())]
    # The rule on c1 decides by c1's own score; a rule on the top class at its score rejects, above it passes.
    d = decide(findings, product)
    assert (d.outcome.value, d.score) == ("reject" if raw[1] >= 0.5 else "pass", pytest.approx(raw[1]))
    top = CLASSES[int(raw.argmax())]
    for min_score, want in ((float(raw.max()) * 0.999, "reject"), (min(1.0, float(raw.max()) * 1.001), "pass")):
        rules = [Rule(name="top", class_name=top, min_score=min_score)]
        assert decide(findings, product.model_copy(update={"rules": rules})).outcome.value == want


def test_class_count_mismatch_on_a_conv_head_is_explained(tmp_path: Path) -> None:
    product = product_for(tmp_path, "light_squeezenet.onnx", "data_0", "softmaxout_1", classes=["good", "c1"])
    with pytest.raises(ModelError, match=r"'softmaxout_1' has 1000 classes, recipe lists 2: \['good', 'c1'\]"):
        OnnxRuntimeBackend(OnnxRuntimeConfig(type="onnxruntime"), product).load()
