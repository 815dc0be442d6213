"""A model that takes uint8 pixels and normalises itself: the CPU preprocessing hands it the resized pixels as
they are (rounded, saturated), the recipe must say so (scale 1, mean 0, std 1), and the daemon runs it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from inspectd.config.load import load_config
from inspectd.config.schema import InputSpec, Preprocess
from inspectd.errors import ConfigError
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame
from tests.conftest import ROOT, write_station
from tests.onnx_models import save_graph

RAW = {"scale": 1.0, "mean": [0.0], "std": [1.0]}


def uint8_brightness_model(path: Path, size: int = 224) -> Path:
    """logits = [0, mean(pixels) - 100] from a uint8 NCHW input (cast inside the model)."""
    x = helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", 3, size, size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    nodes = [helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("GlobalAveragePool", ["xf"], ["g"]),
             helper.make_node("ReduceMean", ["g", "axis1"], ["gm"], keepdims=1),
             helper.make_node("Flatten", ["gm"], ["gf"], axis=1),
             helper.make_node("Sub", ["gf", "thr"], ["z"]),
             helper.make_node("Sub", ["z", "z"], ["zero"]),
             helper.make_node("Concat", ["zero", "z"], ["logits"], axis=1)]
    inits = [numpy_helper.from_array(np.array([100.0], np.float32), "thr"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    return save_graph(helper.make_graph(nodes, "u8", [x], [logits], initializer=inits), path)


def test_uint8_tensor_is_the_resized_pixels() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (448, 448), np.uint8)
    out = CpuPreprocessor(Preprocess(resize="area", **RAW), InputSpec(width=224, height=224, dtype="uint8"),
                          ring=1)(Frame(image=img, pixel_format="Mono8", t_grab=0.0))
    assert out.dtype == np.uint8 and out.shape == (1, 3, 224, 224)
    ref = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(out[0, 0].astype(int) - ref).max() <= 1 and (out[0, 0] == out[0, 2]).all()
    deep = (img.astype(np.uint16) << 4) | 0xF  # Mono12: brought to the 8-bit scale first, as for float inputs
    out12 = CpuPreprocessor(Preprocess(resize="area", **RAW), InputSpec(width=224, height=224, dtype="uint8"),
                            ring=1)(Frame(image=deep, pixel_format="Mono12", t_grab=0.0))
    assert np.abs(out12[0, 0].astype(int) - ref).max() <= 1


def test_uint8_recipe_must_leave_normalisation_to_the_model(tmp_path: Path) -> None:
    st = write_station(tmp_path, product={"model": {"input": {"dtype": "uint8"}}})
    with pytest.raises(ConfigError, match="uint8 takes the pixels as they are"):
        load_config(st)


def test_daemon_runs_a_uint8_model(tmp_path: Path) -> None:
    model = uint8_brightness_model(tmp_path / "u8.onnx")
    st = write_station(tmp_path, {"camera": {"bank": 8}, "archive": {"enabled": False}},
                       {"model": {"input": {"dtype": "uint8"}, "heatmap_output": None}, "preprocess": RAW,
                        "golden": []}, model=model)
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(st), "--max-parts", "8"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = db.execute("SELECT verdict, reason FROM verdicts").fetchall()
    assert len(rows) == 8 and not [row for row in rows if row[0] == "failsafe"]
