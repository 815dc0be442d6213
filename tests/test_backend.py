"""ONNX Runtime backend: loads, infers, and says clearly when the model does not fit the recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspectd.config.load import load_config
from inspectd.errors import ModelError
from inspectd.infer.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from tests.conftest import write_station
from tests.onnx_models import brightness_model


def backend(tmp_path: Path, product: dict | None = None, model: Path | None = None) -> OnnxRuntimeBackend:
    model = model or brightness_model(tmp_path / "m.onnx")
    cfg = load_config(write_station(tmp_path, product=product, model=model))
    return OnnxRuntimeBackend(OnnxRuntimeConfig(type="onnxruntime"), cfg.products["disc-a"])


def test_loads_and_infers(tmp_path: Path) -> None:
    b = backend(tmp_path)
    b.load()
    out = b.infer(np.ones((1, 3, 224, 224), np.float32))
    assert out["logits"].shape == (1, 2) and out["heatmap"].shape == (1, 1, 28, 28)
    assert len(b.model_sha256) == 64 and b.describe()["backend"] == "onnxruntime"


@pytest.mark.parametrize("product,message", [
    ({"model": {"input": {"name": "image"}}}, "no input named 'image' (model inputs: input)"),
    ({"model": {"input": {"width": 256}}}, "dim 3 is 224, recipe says 256"),
    ({"model": {"input": {"dtype": "float16"}}}, "is float32, recipe says model.input.dtype=float16"),
    ({"model": {"scores_output": "scores"}}, "no output named 'scores' for model.scores_output"),
    ({"classes": ["good", "scratch", "spot"], "rules": [{"name": "s", "class": "spot", "min_score": 0.5}]},
     "has 2 classes, recipe lists 3"),
])
def test_mismatch_is_explained(tmp_path: Path, product: dict, message: str) -> None:
    with pytest.raises(ModelError, match="disc-a") as e:
        backend(tmp_path, product).load()
    assert message in str(e.value)


def test_corrupt_or_empty_model_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load model"):
        backend(tmp_path, model=bad).load()
    bad.write_bytes(b"")
    with pytest.raises(ModelError, match="missing or empty"):
        backend(tmp_path, model=bad).load()
