"""Golden-image gate on the real runtime (config -> ONNX Runtime backend -> postprocess -> decide)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd.config.load import load_config
from inspectd.engines.golden import check_golden, require_golden
from inspectd.errors import ExitCode, GoldenCheckError
from inspectd.pipeline.runtime import build_runtime
from tests.conftest import write_station
from tests.onnx_models import brightness_model


def _setup(tmp_path: Path, golden: list[dict]):
    """Brightness model: 'defect' when the normalised frame is brighter than 0 (mid grey) -> dark parts pass."""
    (tmp_path / "products" / "golden").mkdir(parents=True)
    for name, level in (("dark", 20), ("bright", 235)):
        cv2.imwrite(str(tmp_path / "products" / "golden" / f"{name}.png"), np.full((448, 448), level, np.uint8))
    station = write_station(tmp_path, product={"golden": golden}, model=brightness_model(tmp_path / "b.onnx"))
    cfg = load_config(station)
    product = cfg.products["disc-a"]
    return build_runtime(cfg.station, product), product


def test_gate_passes_when_every_image_gets_its_verdict(tmp_path):
    runtime, product = _setup(tmp_path, [{"image": "golden/dark.png", "expect": "pass"},
                                         {"image": "golden/bright.png", "expect": "reject"}])
    assert product.golden[0].image.is_absolute()
    assert check_golden(runtime, product) == []
    require_golden(runtime, product)  # does not raise


def test_gate_fails_on_a_wrong_verdict_and_a_missing_image(tmp_path):
    runtime, product = _setup(tmp_path, [{"image": "golden/dark.png", "expect": "reject"},
                                         {"image": "golden/bright.png", "expect": "reject"},
                                         {"image": "golden/gone.png", "expect": "pass"}])
    failures = check_golden(runtime, product)
    assert len(failures) == 2
    assert "dark.png: expected reject, got pass" in failures[0] and "defect=" in failures[0]
    assert "gone.png: file not found" in failures[1]
    with pytest.raises(GoldenCheckError, match=r"\(2 of 3\)") as e:
        require_golden(runtime, product)
    assert e.value.exit_code == ExitCode.GOLDEN


def test_gate_fails_when_the_model_changes_under_the_recipe(tmp_path):
    """A 'broken export': same file name, inverted decision -> the gate catches it after reload."""
    golden = [{"image": "golden/dark.png", "expect": "pass"}, {"image": "golden/bright.png", "expect": "reject"}]
    runtime, product = _setup(tmp_path, golden)
    assert check_golden(runtime, product) == []
    brightness_model(tmp_path / "b.onnx", threshold=10.0)  # now nothing is ever bright enough
    cfg = load_config(tmp_path / "station.yaml")
    reloaded = build_runtime(cfg.station, cfg.products["disc-a"])
    failures = check_golden(reloaded, cfg.products["disc-a"])
    assert len(failures) == 1 and "bright.png: expected reject, got pass" in failures[0]


def test_unreadable_image_is_a_failure_not_a_crash(tmp_path):
    runtime, product = _setup(tmp_path, [{"image": "golden/junk.png", "expect": "pass"}])
    (tmp_path / "products" / "golden" / "junk.png").write_bytes(b"not a png")
    failures = check_golden(runtime, product)
    assert len(failures) == 1 and "cannot read image" in failures[0]
