"""The committed demo model judges fresh synthetic parts through the daemon's own chain,
and the recipe's area downscale keeps the thin defects that model depends on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd.camera.parts import make_part, random_kind
from inspectd.camera.replay import labelled_images
from inspectd.config.load import load_product
from inspectd.decide import decide
from inspectd.infer.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from inspectd.postprocess import Postprocessor
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame, Outcome

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ROOT / "configs/demo/products/disc-a.yaml"
SEED = 20261124  # not one the training tool uses (1001, 1002)


@pytest.fixture(scope="module")
def product():
    return load_product(PRODUCT)


def test_demo_model_judges_fresh_parts(product) -> None:
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(type="onnxruntime"), product)
    backend.load()  # also checks input/output names and shapes against the recipe
    prep, post = CpuPreprocessor(product.preprocess, product.model.input), Postprocessor(product)
    rng = np.random.default_rng(SEED)
    results: list[tuple[str, bool]] = []
    for _ in range(200):
        kind = random_kind(rng, 0.5)
        image, _ = make_part(rng, 448, kind)
        findings = post(backend.infer(prep(Frame(image=image, pixel_format="Mono8", t_grab=0.0))))
        assert findings.extra["heatmap"].shape == (28, 28)
        rejected = decide(findings, product).outcome is Outcome.REJECT
        results.append((kind or "good", rejected))
    truth = np.array([k != "good" for k, _ in results])
    rejected = np.array([r for _, r in results])
    assert 60 < truth.sum() < 140, "the sample should hold both good and defective parts"
    accuracy = float(np.mean(truth == rejected))
    misses = sorted({k for k, r in results if (k != "good") != r})
    assert accuracy >= 0.95, f"accuracy {accuracy:.3f}; misjudged kinds: {misses}"


def _line_image(diagonal: bool) -> np.ndarray:
    """448x448 grey frame with one 1-px bright line that lies on odd pixels only."""
    image = np.full((448, 448), 100, np.uint8)
    i = np.arange(100, 300)
    if diagonal:
        image[i, i + 1] = 200  # x = y + 1: every pixel has one odd coordinate
    else:
        image[:, 201] = 200
    return image


@pytest.mark.parametrize("diagonal", [False, True])
def test_area_downscale_keeps_one_pixel_scratch(product, diagonal: bool) -> None:
    image = _line_image(diagonal)
    prep = CpuPreprocessor(product.preprocess, product.model.input)
    assert product.preprocess.resize == "area"
    frame = Frame(image=image, pixel_format="Mono8", t_grab=0.0)
    plan = prep.plan_for(frame)
    area = (prep(frame)[0, 0] - plan.bias[0]) / plan.gain[0]  # back to 8-bit pixel units
    nearest = cv2.resize(image, (224, 224), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    strided = image[::2, ::2].astype(np.float32)

    def contrast(small: np.ndarray) -> float:
        return float(small.max() - np.median(small))

    # A 100-level line fills 2 of 4 pixels of its 2x2 boxes (vertical) or 1 of 4 (diagonal): the box average keeps that.
    assert contrast(area) >= (20 if diagonal else 45)
    assert contrast(nearest) < 5
    assert contrast(strided) < 5


def test_make_dataset_writes_a_replay_folder(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    subprocess.run([sys.executable, str(ROOT / "tools/make_dataset.py"), str(folder), "--count", "12", "--seed", "3",
                    "--mix", "balanced", "--workers", "1"], check=True, capture_output=True)
    items = labelled_images(folder)
    assert len(items) == 12
    assert {label for _, label in items} == {"pass", "reject"}
    image = cv2.imread(str(items[0][0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (448, 448) and image.dtype == np.uint8
    kinds = [line.split(",")[2] for line in (folder / "labels.csv").read_text().splitlines()[1:]]
    assert sorted(set(kinds)) == ["chip", "good", "scratch", "spot"]
