"""ONNX Runtime execution providers as the station chooses them: parsed, checked, and never a silent CPU fallback.

These run on any machine: the CPU-only onnxruntime wheel offers no GPU provider, which is exactly the case a
station asking for one must refuse. The GPU side runs in tests/gpu/test_ort_gpu.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from inspectd.config.load import load_config
from inspectd.errors import BackendUnavailable, ExitCode
from inspectd.infer.onnxruntime import CpuProvider, CudaProvider, OnnxRuntimeBackend, TensorrtProvider
from tests.conftest import write_station

NO_GPU = "CUDAExecutionProvider" not in ort.get_available_providers()


def _backend(tmp_path: Path, **backend) -> OnnxRuntimeBackend:
    cfg = load_config(write_station(tmp_path, {"backend": {"type": "onnxruntime", **backend}}))
    product = cfg.products[cfg.station.product]
    return OnnxRuntimeBackend(cfg.station.backend, product)  # type: ignore[arg-type]


def test_default_is_cpu_only(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    assert b.cfg.providers == [CpuProvider(name="cpu")]
    b.load()
    assert b.providers == ["CPUExecutionProvider"]
    assert b.describe()["device"] == "cpu"
    assert not b.accepts_device_input


def test_provider_names_and_options_parse_in_order(tmp_path: Path) -> None:
    b = _backend(tmp_path, providers=[{"name": "tensorrt", "fp16": True, "engine_cache": "trt-cache"},
                                      {"name": "cuda", "device_id": 1, "cuda_graph": True}, "cpu"])
    tp, cp, cpu = b.cfg.providers
    assert isinstance(tp, TensorrtProvider) and tp.fp16 and tp.engine_cache is not None
    assert isinstance(cp, CudaProvider) and cp.device_id == 1 and cp.cuda_graph
    assert isinstance(cpu, CpuProvider)
    assert b.cuda_device == 0  # the first GPU provider names the device GPU preprocessing writes to


def test_unknown_provider_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    from inspectd.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(write_station(tmp_path, {"backend": {"type": "onnxruntime", "providers": ["cudaa"]}}))
    assert any("station.yaml:" in p and "providers" in p for p in e.value.problems), e.value.problems


@pytest.mark.skipif(not NO_GPU, reason="this onnxruntime has the CUDA provider: the refusal needs a CPU-only one")
def test_gpu_provider_missing_refuses_instead_of_running_on_cpu(tmp_path: Path) -> None:
    b = _backend(tmp_path, providers=["cuda", "cpu"])
    with pytest.raises(BackendUnavailable) as e:
        b.load()
    msg = str(e.value)
    assert "CUDAExecutionProvider" in msg and "CPUExecutionProvider" in msg  # what was asked, what is offered
    assert "onnxruntime-gpu" in msg  # how to get it
    assert e.value.exit_code == ExitCode.MODEL


@pytest.mark.skipif(not NO_GPU, reason="this onnxruntime has the CUDA provider")
def test_fallback_only_when_the_station_allows_it(tmp_path: Path) -> None:
    b = _backend(tmp_path, providers=["cuda", "cpu"], allow_fallback=True)
    b.load()
    assert b.providers == ["CPUExecutionProvider"]
    assert b.describe()["device"] == "cpu"


@pytest.mark.skipif(not NO_GPU, reason="this onnxruntime has the CUDA provider")
def test_run_refuses_to_start_with_exit_3_naming_the_cause(tmp_path: Path) -> None:
    station = write_station(tmp_path, {"backend": {"type": "onnxruntime", "providers": ["cuda"]}})
    p = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station), "--max-parts", "1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == int(ExitCode.MODEL), p.stderr[-2000:]
    assert "CUDAExecutionProvider" in p.stdout + p.stderr


def test_convert_fp16_keeps_float32_io_and_halves_the_weights(tmp_path: Path) -> None:
    import onnx

    from tests.conftest import DEMO_MODEL

    out = tmp_path / "demo.fp16.onnx"
    p = subprocess.run([sys.executable, "-m", "inspectd.cli", "convert-fp16", "--onnx", str(DEMO_MODEL),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in m.graph.input] == [f32]
    assert all(o.type.tensor_type.elem_type == f32 for o in m.graph.output)
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer) > 0
    assert out.stat().st_size < 0.6 * DEMO_MODEL.stat().st_size
    assert out.stat().st_mode & 0o044 == 0o044  # readable by the service user


def test_cuda_graph_output_shapes_are_probed_where_the_model_declares_symbolic_ones() -> None:
    """A CUDA graph binds every output at a fixed address: the anomaly recipe's map is declared with symbolic
    dimensions (a Resize), so the device runner takes its fixed shape from one CPU run of the model at load."""
    import numpy as np

    from inspectd.infer.ort_device import _probe_output_shapes

    root = Path(__file__).resolve().parent.parent
    product = load_config(root / "configs/demo-anomaly/station.yaml").products["disc-anomaly"]
    spec = product.model.input
    in_shape = [1, spec.channels, spec.height, spec.width]
    declared = {o.name: o.shape for o in ort.InferenceSession(str(product.model.path),
                                                               providers=["CPUExecutionProvider"]).get_outputs()}
    assert not all(isinstance(d, int) for d in declared["anomaly_map"])  # what made cuda_graph refuse it
    shapes = _probe_output_shapes(ort, product, in_shape, np.float32)
    assert set(shapes) == set(declared)
    assert all(isinstance(d, int) and d > 0 for s in shapes.values() for d in s)
    assert shapes["anomaly_map"][0] == 1 and shapes["anomaly_map"][-2:] == [spec.height, spec.width]
