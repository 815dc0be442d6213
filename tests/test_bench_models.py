"""The bench tools' stations: another model swapped into the demo recipe keeps the recipe's product name (the
product file is named after it) and takes the model's own input and output names."""

from __future__ import annotations

import sys
from pathlib import Path

from inspectd.config.load import load_config
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))

from bench_models import LIGHT, station_for


def test_a_generic_classifier_in_the_demo_recipe(tmp_path: Path) -> None:
    model = LIGHT / "light_resnet50.onnx"  # its input is named 'gpu_0/data_0': no file name for a product
    cfg = load_config(station_for(model, tmp_path))
    product = cfg.products[cfg.station.product]
    assert product.name == "disc-a" and product.model.path == model
    assert product.model.input.name == "gpu_0/data_0" and len(product.classes) == 1000
