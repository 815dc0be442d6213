"""ONNX Runtime's CUDA provider inside inspectd, on a real GPU: same scores as the CPU path, GPU preprocessing
launched straight into the session's device input (IO binding, one stream), CUDA graphs, warm before READY.

Skipped (with the reason) without onnxruntime-gpu, pycuda and a CUDA device, as in CI. On the GPU machine:
    bash tests/gpu/device_ort.sh   (see its header)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspectd.camera.registry import make_source
from inspectd.config.load import load_config
from inspectd.pipeline.runtime import build_runtime
from tests.conftest import write_station


def _reason() -> str | None:
    try:
        import onnxruntime as ort
    except Exception as exc:
        return f"onnxruntime not importable: {exc}"
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime has no CUDA provider ({ort.get_available_providers()})"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA device"
    except Exception as exc:
        return f"pycuda/CUDA not usable: {exc}"
    return None


REASON = _reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"needs the CUDA provider: {REASON}")]


def _runtime(tmp_path: Path, name: str, backend: dict, preprocess: str = "cpu", **product):
    folder = tmp_path / name
    folder.mkdir()
    cfg = load_config(write_station(folder, {"preprocess": preprocess, "camera": {"bank": 16},
                                             "backend": {"type": "onnxruntime", **backend}}, product or None))
    return cfg, build_runtime(cfg.station, cfg.products[cfg.station.product])


def _frames(cfg, n: int) -> list:
    src = make_source(cfg.station.camera)
    src.open()
    try:
        return [src.grab(1.0) for _ in range(n)]
    finally:
        src.close()


def _scores(rt, frames) -> np.ndarray:
    out = []
    for f in frames:
        outputs = rt.backend.infer(rt.preprocess(f))
        out.append(np.asarray(outputs[rt.product.model.scores_output], np.float32).reshape(-1))
    return np.stack(out)


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("cuda_graph", [False, True], ids=["plain", "cuda_graph"])
@pytest.mark.parametrize("preprocess", ["cpu", "gpu"])
def test_cuda_provider_matches_cpu(tmp_path: Path, preprocess: str, cuda_graph: bool) -> None:
    cfg, ref = _runtime(tmp_path, "cpu", {})
    _, gpu = _runtime(tmp_path, "gpu", {"providers": [{"name": "cuda", "cuda_graph": cuda_graph}]}, preprocess)
    try:
        assert gpu.backend.providers[0] == "CUDAExecutionProvider"
        assert gpu.backend.describe()["device"] == "cuda:0"
        frames = _frames(cfg, 16)
        got = _scores(gpu, frames)
        assert np.isfinite(got).all()
        # every frame differs, so a stale input buffer (kernel not ordered before the model) would show here
        assert len({tuple(np.round(r, 4)) for r in got}) > 1
        if preprocess == "gpu":  # the kernel writes the session's bound input: no host round trip
            assert gpu.backend.accepts_device_input
            assert not isinstance(gpu.preprocess(frames[0]), np.ndarray)
            staged = [np.asarray(gpu.preprocess(f)) for f in frames]  # one at a time: the staging ring is small
            # the same tensors (read back from the GPU) through the CPU session: only the model's arithmetic
            # differs, so a transposed, shifted or half-written binding cannot hide in the tolerance
            name = ref.product.model.input.name
            want = np.stack([np.asarray(ref.backend._session.run(None, {name: t})[0]).reshape(-1)
                             for t in staged])
        else:
            want = _scores(ref, frames)
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)  # cuDNN (TF32 off) vs MLAS, FP32 logits
        # end to end against the CPU reference path: OpenCV rounds its resized image, the GPU keeps the average
        cpu = _scores(ref, frames)
        np.testing.assert_allclose(_probs(got), _probs(cpu), atol=1.5e-2)
        assert (np.argmax(cpu, 1) == np.argmax(got, 1)).all()
    finally:
        ref.close()
        gpu.close()


def test_outputs_are_not_overwritten_by_the_next_part(tmp_path: Path) -> None:
    cfg, gpu = _runtime(tmp_path, "gpu", {"providers": ["cuda"]}, "gpu")
    try:
        f1, f2 = _frames(cfg, 2)
        o1 = gpu.backend.infer(gpu.preprocess(f1))
        kept = {k: v.copy() for k, v in o1.items()}
        gpu.backend.infer(gpu.preprocess(f2))
        for k in kept:
            np.testing.assert_array_equal(o1[k], kept[k])  # a sink (archive heatmap) may still hold o1
    finally:
        gpu.close()


def test_fp16_variant_agrees_with_fp32(tmp_path: Path) -> None:
    from inspectd.engines.fp16 import convert_fp16
    from tests.conftest import DEMO_MODEL

    fp16 = convert_fp16(DEMO_MODEL, tmp_path / "demo.fp16.onnx").out
    cfg, a = _runtime(tmp_path, "fp32", {"providers": ["cuda"]})
    _, b = _runtime(tmp_path, "fp16", {"providers": ["cuda"]}, model={"path": str(fp16)})
    try:
        frames = _frames(cfg, 16)
        sa, sb = _scores(a, frames), _scores(b, frames)
        np.testing.assert_allclose(sb, sa, atol=2e-2)
        assert (np.argmax(sa, 1) == np.argmax(sb, 1)).all()
    finally:
        a.close()
        b.close()


def test_pinned_source_frames_skip_the_staging_copy(tmp_path: Path) -> None:
    """The synthetic bank is one block the preprocessor page-locks: frames go to the GPU straight from it, with the
    same tensors as through the staging copy."""
    cfg, staged = _runtime(tmp_path, "staged", {"providers": ["cuda"]}, "gpu")
    _, pinned = _runtime(tmp_path, "pinned", {"providers": ["cuda"]}, "gpu")
    src = make_source(cfg.station.camera)
    src.open()
    try:
        (block,) = src.host_buffers()
        pinned.preprocess.pin_host_buffers([block])
        frames = [src.grab(1.0) for _ in range(8)]
        for f in frames:
            assert f is not None and np.shares_memory(f.image, block)
            a = np.asarray(staged.preprocess(f))
            b = np.asarray(pinned.preprocess(f))
            np.testing.assert_array_equal(a, b)
        assert staged.preprocess.staging_copies == 8
        assert pinned.preprocess.staging_copies == 0
    finally:
        src.close()
        staged.close()
        pinned.close()


def test_first_parts_after_start_meet_the_budget(tmp_path: Path) -> None:
    """Warmed as the daemon does before READY: none of the first parts is a deadline fail-safe (50 ms budget)."""
    from inspectd.bench import bench_config, run_pipeline

    cfg, rt = _runtime(tmp_path, "warm", {"providers": ["cuda"]}, "gpu")
    rt.close()
    r = run_pipeline(bench_config(cfg, in_flight=2), 100, warmup=20)
    assert r["first_parts_failsafes"] == 0, r["first_parts_e2e_ms"]
    assert max(r["first_parts_e2e_ms"]) < cfg.station.cycle_budget_ms


def test_graph_station_captures_on_the_infer_thread_before_its_first_part(tmp_path: Path) -> None:
    """ONNX Runtime keeps a CUDA graph per calling thread: the stage warm-up captures the infer thread's before any
    part (no part pays a capture, none pauses the GPU for one), and the loading thread captures none."""
    from inspectd.bench import Collector
    from inspectd.pipeline.pipeline import Pipeline

    cfg, rt = _runtime(tmp_path, "graph", {"providers": [{"name": "cuda", "cuda_graph": True}]}, "gpu")
    runner = rt.backend._device  # type: ignore[attr-defined]
    assert runner is not None and runner.captured_on == []
    src = make_source(cfg.station.camera)
    src.open()
    col = Collector(40)
    pipe = Pipeline(cfg.station, src, rt, sinks=[col])
    pipe.set_max_parts(40)
    try:
        pipe.start(warm=[(rt, src.sample())])
        assert runner.captured_on == ["infer"]
        assert col.done.wait(60)
    finally:
        pipe.stop()
        src.close()
        rt.close()
    assert runner.captured_on == ["infer"]  # no part captured again
    assert [v.outcome.value for v in col.verdicts].count("failsafe") == 0
