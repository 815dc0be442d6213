"""Engine build path: profiles, progress, calibration feed, and real builds with TensorRT-RTX on this CPU-only
machine (parse, profiles, build_serialized_network, manifest, sha256 check). Deserialising and running the
engines needs an RTX-class GPU and is not done here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from inspectd.config.load import load_product
from inspectd.engines.build import BuildOptions, BuildProgress, build_engine, has_qdq
from inspectd.engines.calibrate import CalibrationSet, CalibratorFeed, make_entropy_calibrator
from inspectd.engines.cli import add_engine_parsers
from inspectd.engines.manifest import Action, HostInfo, decide, manifest_path, read_manifest
from inspectd.engines.profiles import pick_profile, profiles_for
from inspectd.engines.quantize import quantize_qdq
from inspectd.errors import ModelError
from tests.engine_fixtures import (
    dynamic_hw_model,
    import_tensorrt_rtx,
    product_dict,
    write_parts,
    write_product,
)
from tests.onnx_models import brightness_model


def _product_file(folder: Path, model: Path, name: str, width: int, height: int) -> Path:
    pr = product_dict(model)
    pr["name"], pr["plc_id"] = name, hash(name) % 1000
    pr["model"]["input"].update(width=width, height=height)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(pr, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trt_rtx():
    trt, reason = import_tensorrt_rtx()
    if trt is None:
        pytest.skip(reason)
    return trt


# -- profiles -----------------------------------------------------------------------------------------------
def test_one_profile_per_product_size_and_tightest_pick(tmp_path):
    onnx = dynamic_hw_model(tmp_path / "dyn.onnx")
    products = [load_product(_product_file(tmp_path, onnx, n, w, h))
                for n, w, h in (("a", 224, 224), ("b", 320, 256), ("c", 224, 224))]
    profiles = profiles_for(products, onnx, max_batch=4)
    assert [(p.min, p.opt, p.max) for p in profiles] == [
        ((1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 224, 224)),
        ((1, 3, 256, 320), (1, 3, 256, 320), (4, 3, 256, 320))]
    assert pick_profile(profiles, (1, 3, 256, 320)) == 1 and pick_profile(profiles, (2, 3, 224, 224)) == 0
    with pytest.raises(ModelError, match="no optimisation profile accepts input shape"):
        pick_profile(profiles, (1, 3, 100, 100))


def test_fixed_size_model_refuses_other_product_sizes(tmp_path):
    onnx = brightness_model(tmp_path / "b.onnx")  # 224x224 fixed, batch dynamic
    other = load_product(_product_file(tmp_path, onnx, "big", 320, 224))
    with pytest.raises(ModelError, match="fixes it at 224: export the model with a dynamic W axis"):
        profiles_for([other], onnx)


# -- progress -----------------------------------------------------------------------------------------------
def test_progress_follows_top_level_phase_and_can_cancel():
    out = io.StringIO()
    bar = BuildProgress(out)
    bar.phase_start("Building engine", None, 4)
    bar.phase_start("Tactic selection", "Building engine", 100)
    for i in range(100):
        assert bar.step_complete("Tactic selection", i)
    bar.phase_finish("Tactic selection")
    bar.step_complete("Building engine", 1)
    assert bar.fraction() == 0.5
    bar.cancelled = True
    assert bar.step_complete("Building engine", 2) is False  # TensorRT stops the build
    bar.phase_finish("Building engine")
    lines = out.getvalue().splitlines()
    assert len(lines) == 5  # non-tty: starts, top-level steps and the finish only
    assert "[###############...............]  50.0%" in lines[2] and "100.0%" in lines[-1]


# -- calibration feed (the TensorRT-free half of IInt8EntropyCalibrator2) ------------------------------------
def test_calibrator_feed_serves_full_batches_and_caches(tmp_path):
    images = write_parts(tmp_path / "calib", 10, seed=5)
    product = load_product(write_product(tmp_path, brightness_model(tmp_path / "b.onnx")))
    uploaded: list[np.ndarray] = []

    def upload(batch: np.ndarray) -> int:  # stands in for the device copy: keeps the batch, returns its address
        uploaded.append(batch)
        return batch.ctypes.data

    cache = tmp_path / "engine.calib"
    feed = CalibratorFeed(CalibrationSet.from_folder(product, images, batch=4), upload, cache)
    assert feed.batch_size() == 4 and feed.read_cache() is None
    ptrs = [feed.next_pointers(["input"]) for _ in range(3)]
    assert ptrs[2] is None and feed.batches_served == 2  # 10 images: two full batches, the rest dropped
    assert ptrs[0] == [uploaded[0].ctypes.data] and uploaded[0].shape == (4, 3, 224, 224)
    with pytest.raises(ValueError, match="only 'input' is fed"):
        CalibratorFeed(feed.data, upload, None).next_pointers(["input", "mask"])
    feed.write_cache(b"TRT-10300-EntropyCalibration2\n")
    assert feed.read_cache() == b"TRT-10300-EntropyCalibration2\n"


def test_implicit_calibrator_is_refused_by_tensorrt_rtx(trt_rtx, tmp_path):
    feed = CalibratorFeed.__new__(CalibratorFeed)
    with pytest.raises(RuntimeError, match="no IInt8EntropyCalibrator2: use a Q/DQ model"):
        make_entropy_calibrator(trt_rtx, feed)


# -- real builds with TensorRT-RTX ---------------------------------------------------------------------------
def test_rtx_builds_fp32_engine_with_manifest_that_verifies(trt_rtx, tmp_path):
    onnx = brightness_model(tmp_path / "b.onnx")
    product = load_product(write_product(tmp_path, onnx))
    engine = tmp_path / "b.fp32.engine"
    out = io.StringIO()
    manifest = build_engine(trt_rtx, onnx, engine, profiles_for([product], onnx, max_batch=2),
                            BuildOptions(precision="fp32", workspace_mb=256, compute_capability="8.6"),
                            BuildProgress(out))
    assert engine.stat().st_size == manifest.engine_bytes > 10_000
    assert manifest.runtime == "tensorrt-rtx" and manifest.trt_version == trt_rtx.__version__
    assert manifest.compute_capability == "8.6" and manifest.profiles[0].max == (2, 3, 224, 224)
    assert json.loads(manifest_path(engine).read_text())["engine_sha256"] == manifest.engine_sha256
    assert "building engine [" in out.getvalue() and "100.0%" in out.getvalue()  # TensorRT drove the monitor
    rtx86 = HostInfo("tensorrt-rtx", trt_rtx.__version__, "8.6", "RTX A2000")
    d = decide(engine, rtx86, onnx, allow_rebuild=False)
    assert d.action is Action.LOAD and d.data == engine.read_bytes()
    d = decide(engine, HostInfo("tensorrt-rtx", trt_rtx.__version__, "8.9", "RTX 4000 Ada"), onnx, True)
    assert d.action is Action.REBUILD and "built for compute capability 8.6" in d.message()
    engine.write_bytes(engine.read_bytes()[:-1] + b"\x00")  # one byte changed: never handed to TensorRT
    assert decide(engine, rtx86, onnx, allow_rebuild=False).action is Action.REFUSE


def test_rtx_builds_int8_from_qdq_model_and_one_engine_for_two_sizes(trt_rtx, tmp_path):
    calib = write_parts(tmp_path / "calib", 16, seed=9)
    onnx = brightness_model(tmp_path / "b.onnx")
    product = load_product(write_product(tmp_path, onnx))
    qdq = tmp_path / "b.int8.onnx"
    quantize_qdq(onnx, qdq, CalibrationSet.from_folder(product, calib, batch=4), "minmax")
    assert has_qdq(qdq)
    m = build_engine(trt_rtx, qdq, tmp_path / "b.int8.engine", profiles_for([product], qdq),
                     BuildOptions(precision="int8", compute_capability="8.9"))
    assert m.int8_mode == "qdq" and m.precision == "int8"

    dyn = dynamic_hw_model(tmp_path / "dyn.onnx")
    products = [load_product(_product_file(tmp_path, dyn, n, w, h)) for n, w, h in (("a", 224, 224),
                                                                                   ("b", 320, 256))]
    m2 = build_engine(trt_rtx, dyn, tmp_path / "dyn.engine", profiles_for(products, dyn),
                      BuildOptions(precision="fp32", compute_capability="8.6"))
    assert len(m2.profiles) == 2 and read_manifest(tmp_path / "dyn.engine") == m2


def test_rtx_refuses_what_a_strongly_typed_builder_cannot_do(trt_rtx, tmp_path):
    onnx = brightness_model(tmp_path / "b.onnx")
    product = load_product(write_product(tmp_path, onnx))
    profiles = profiles_for([product], onnx)
    with pytest.raises(ModelError, match="strongly typed"):
        build_engine(trt_rtx, onnx, tmp_path / "x.engine", profiles, BuildOptions("fp16", compute_capability="8.6"))
    with pytest.raises(ModelError, match="no Q/DQ nodes"):
        build_engine(trt_rtx, onnx, tmp_path / "x.engine", profiles, BuildOptions("int8", compute_capability="8.6"))
    with pytest.raises(ModelError, match="cannot target SM90"):
        build_engine(trt_rtx, onnx, tmp_path / "x.engine", profiles, BuildOptions("fp32", compute_capability="9.0"))
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot parse"):
        build_engine(trt_rtx, tmp_path / "bad.onnx", tmp_path / "x.engine", profiles,
                     BuildOptions("fp32", compute_capability="8.6"))
    assert not (tmp_path / "x.engine").exists()  # nothing half-written


def test_build_engine_command_with_rtx(trt_rtx, tmp_path, capsys):
    import argparse

    onnx = brightness_model(tmp_path / "b.onnx")
    product = write_product(tmp_path, onnx)
    ap = argparse.ArgumentParser()
    add_engine_parsers(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["build-engine", "--onnx", str(onnx), "--product", str(product), "--precision", "fp32",
                          "--runtime", "tensorrt-rtx", "--compute-capability", "8.6", "--workspace-mb", "128"])
    assert args.func(args) == 0
    engine = tmp_path / "b.fp32.engine"
    assert read_manifest(engine).workspace_mb == 128
    assert f"wrote {engine}" in capsys.readouterr().out


DEMO_MODEL = Path(__file__).resolve().parent.parent / "engines" / "demo_disc.onnx"


@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="trained demo model not in the tree")
def test_rtx_builds_the_demo_model_for_its_recipe(trt_rtx, tmp_path):
    product = load_product(DEMO_MODEL.parent.parent / "configs" / "demo" / "products" / "disc-a.yaml")
    engine = tmp_path / "demo_disc.sm86.fp32.engine"
    m = build_engine(trt_rtx, DEMO_MODEL, engine, profiles_for([product], DEMO_MODEL, max_batch=8),
                     BuildOptions(precision="fp32", compute_capability="8.6"))
    assert m.profiles[0].max == (8, 3, 224, 224) and m.onnx_file == str(DEMO_MODEL)
    rtx86 = HostInfo("tensorrt-rtx", trt_rtx.__version__, "8.6")
    assert decide(engine, rtx86, DEMO_MODEL, allow_rebuild=False).action is Action.LOAD
