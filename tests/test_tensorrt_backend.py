"""TensorRT backend, the parts that run without TensorRT or a GPU: config, engine paths, the error when the
SDK is missing, buffer planning and the context pool. (tests/gpu/test_cuda_buffers.py runs the rest on a GPU.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from inspectd.config.load import load_product
from inspectd.engines.cli import candidate_models
from inspectd.engines.compare import make_backend_for
from inspectd.errors import BackendUnavailable, ExitCode
from inspectd.infer.cuda_buffers import SlotPool, TensorSlot, plan_io
from inspectd.infer.registry import make_backend
from inspectd.infer.tensorrt import TensorRTBackend, TensorRTConfig, engine_paths, load_trt
from tests.engine_fixtures import write_product
from tests.onnx_models import brightness_model


@pytest.fixture
def product(tmp_path: Path):
    return load_product(write_product(tmp_path, brightness_model(tmp_path / "disc.onnx")))


def test_config_defaults_and_unknown_keys():
    cfg = TensorRTConfig(type="tensorrt")
    assert (cfg.runtime, cfg.contexts, cfg.precision, cfg.rebuild) == ("tensorrt", 1, "fp16", False)
    with pytest.raises(ValidationError):
        TensorRTConfig(type="tensorrt", context=2)  # misspelt key
    with pytest.raises(ValidationError):
        TensorRTConfig(type="tensorrt", precision="int4")
    for name, field in TensorRTConfig.model_fields.items():
        assert name == "type" or field.description, name


def test_engine_path_beside_the_onnx_or_named(product, tmp_path):
    engine, onnx = engine_paths(TensorRTConfig(type="tensorrt", precision="int8"), product)
    assert engine == tmp_path / "disc.int8.engine" and onnx == product.model.path
    engine, _ = engine_paths(TensorRTConfig(type="tensorrt", engine=tmp_path / "x.plan"), product)
    assert engine == tmp_path / "x.plan"
    direct = product.model_copy(update={"model": product.model.model_copy(update={"path": tmp_path / "a.engine"})})
    assert engine_paths(TensorRTConfig(type="tensorrt"), direct) == (tmp_path / "a.engine", None)  # no manifest


def test_missing_tensorrt_is_a_clear_backend_error(product, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name in ("tensorrt", "tensorrt_rtx"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(BackendUnavailable, match="tensorrt is not installed") as e:
        load_trt("tensorrt")
    assert e.value.exit_code == ExitCode.MODEL
    with pytest.raises(BackendUnavailable, match="install tensorrt-rtx-cu13"):
        load_trt("tensorrt-rtx")
    backend = make_backend(TensorRTConfig(type="tensorrt"), product)
    assert isinstance(backend, TensorRTBackend)
    with pytest.raises(BackendUnavailable):
        backend.load()
    backend.close()  # closing a backend that never loaded is harmless


def test_engine_files_are_routed_to_tensorrt(product, tmp_path):
    eng = product.model_copy(update={"model": product.model.model_copy(update={"path": tmp_path / "m.engine"})})
    assert isinstance(make_backend_for(eng), TensorRTBackend)
    assert make_backend_for(product).name == "onnxruntime"
    for name in ("disc.int8.onnx", "disc.fp16.engine", "other.onnx"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in candidate_models(product.model.path)] == ["disc.onnx", "disc.fp16.engine",
                                                                      "disc.int8.onnx"]


def test_buffer_plan_checks():
    f32 = np.dtype(np.float32)
    plan = plan_io([TensorSlot("input", True, f32, (4, 3, 224, 224)), TensorSlot("logits", False, f32, (4, 2))])
    assert plan[0].nbytes == 4 * 3 * 224 * 224 * 4 and plan[1].elements == 8
    with pytest.raises(ValueError, match="data-dependent"):
        plan_io([TensorSlot("input", True, f32, (1, 3, 8, 8)), TensorSlot("boxes", False, f32, (-1, 4))])
    with pytest.raises(ValueError, match="duplicate"):
        plan_io([TensorSlot("x", True, f32, (1,)), TensorSlot("x", False, f32, (1,))])
    with pytest.raises(ValueError, match="at least one input and one output"):
        plan_io([TensorSlot("x", True, f32, (1,))])


def test_slot_pool_hands_each_slot_to_one_caller_at_a_time():
    pool = SlotPool(["ctx0", "ctx1", "ctx2"])
    holders: dict[str, int] = {}
    clash: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            with pool.acquire(timeout=5) as slot:
                with lock:
                    holders[slot] = holders.get(slot, 0) + 1
                    if holders[slot] > 1:
                        clash.append(slot)
                time.sleep(0.0005)
                with lock:
                    holders[slot] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clash == [] and pool.in_use == 0 and pool.peak_in_use == 3
    busy = pool.acquire(timeout=0.01)
    with pool.acquire(), pool.acquire(), pool.acquire(), pytest.raises(TimeoutError):
        busy.__enter__()  # all three slots are taken
