"""GPU preprocessing against the OpenCV reference, on a real CUDA device.

Skipped (with the reason) where pycuda or a CUDA device is missing, as in CI. On a GPU box:
    pip install -e '.[dev,tensorrt]' && python -m pytest -m gpu tests/gpu -q

Tolerance, per element: |gpu - cpu| <= tolerance_levels(plan) * gain + fp, where tolerance_levels is 0.5 raw
level for area/letterbox and 1 level for interpolating resizes (OpenCV rounds its resized integer image; the
GPU keeps the exact average), and fp is 1e-5 for float32 and half an fp16 ulp of the value for float16.
The kernel is also held to its numpy model (tests/test_gpu_kernels.py) within float32 rounding.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from inspectd.preprocess import gpu_kernels as gk
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame
from tests.test_gpu_kernels import CASES, chain, kernel_model, random_frame


def _cuda_reason() -> str | None:
    try:
        import pycuda.driver as cuda
    except Exception as exc:
        return f"pycuda not importable: {exc}"
    try:
        cuda.init()
        return None if cuda.Device.count() > 0 else "no CUDA device"
    except Exception as exc:
        return f"CUDA did not initialise: {exc}"


REASON = _cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"needs CUDA: {REASON}")]

if REASON is None:
    import pycuda.driver as cuda

    from inspectd.preprocess.gpu import DeviceInput, GpuPreprocessor

ids = [f"{c[0]}-{c[1]}x{c[2]}-{c[4]}-{c[7]}{c[8]}" for c in CASES]


def allowed(plan, ref: np.ndarray, dtype: str) -> np.ndarray:
    gain = plan.gain.astype(np.float64).reshape(-1, 1, 1)
    # float16: both paths round to fp16, each by up to half an ulp
    fp = np.abs(ref) * 2.0**-10 + 2.0**-23 if dtype == "float16" else 1e-5
    return gk.tolerance_levels(plan) * gain + 1e-6 + fp


@pytest.mark.parametrize("variant", ["separable", "gather", "vec16", "bayer"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_gpu_matches_opencv_reference(case: tuple, dtype: str, variant: str) -> None:
    pp, spec, frame = chain(case, dtype)
    if variant in ("vec16", "bayer"):
        from inspectd.preprocess.plan import make_plan

        plan = make_plan(pp, spec, frame.image.shape[1], frame.image.shape[0], frame.pixel_format)
        tx, ty = gk.resize_taps(plan)
        if variant == "vec16" and not gk.vec16_applies(plan, tx, frame.image.strides[0]):
            pytest.skip("vec16 is for Mono8 frames with 16-byte aligned rows")
        if variant == "bayer" and gk.bayer_columns(plan, tx, ty) is None:
            pytest.skip("the bayer kernel is for Bayer mosaics")
    cpu = CpuPreprocessor(pp, spec, ring=1)
    gpu = GpuPreprocessor(pp, spec, ring=2, deliver="host", variant=variant)
    try:
        got = gpu(frame)[0].astype(np.float64)
        ref = cpu(frame)[0].astype(np.float64)
        plan = gpu.kernel_for(frame).plan
        assert got.dtype == np.float64 and np.isfinite(got).all()
        lim = allowed(plan, ref, dtype)
        worst = float(np.max(np.abs(got - ref) / lim))
        print(f"{case[0]} {case[4]} {dtype} {variant}: max |gpu-cpu| = {np.abs(got - ref).max():.2e} "
              f"({worst:.2f} of tolerance)")
        assert worst <= 1.0
        # the kernel computes its model exactly (up to float32/float16 rounding), everywhere
        model = kernel_model(plan, frame.image)
        fp = np.abs(model) * 2.0**-11 + 1e-4 if dtype == "float16" else np.abs(model) * 1e-5 + 1e-5
        assert np.all(np.abs(got - model) <= fp)
    finally:
        gpu.close()


def _poisoned(nbytes: int) -> object:
    d = cuda.mem_alloc(nbytes)
    cuda.memset_d8(d, 0xFF, nbytes)  # all-ones bytes = NaN in float32 and float16: unwritten output shows
    return d


@pytest.mark.parametrize("case", [CASES[1], CASES[7], CASES[8]], ids=lambda c: c[0])
def test_device_input_writes_given_pointer_on_given_stream(case: tuple) -> None:
    """Several parts staged before any kernel runs (as when inference lags): each lands where the consumer
    says, on its stream, equal to the OpenCV reference."""
    pp, spec, _ = chain(case)
    cpu = CpuPreprocessor(pp, spec, ring=4)
    gpu = GpuPreprocessor(pp, spec, ring=4, deliver="device")
    frames = [Frame(image=random_frame(case[0], case[1], case[2], seed=s), pixel_format=case[0], t_grab=0.0)
              for s in range(3)]
    try:
        staged = [gpu(f) for f in frames]
        assert all(isinstance(s, DeviceInput) for s in staged)
        with gpu.current():
            stream = cuda.Stream()
            for f, s in zip(frames, staged, strict=True):
                dst = _poisoned(s.nbytes)
                s.enqueue_into(int(dst), stream)
                out = np.empty(s.shape, s.dtype)
                cuda.memcpy_dtoh_async(out, dst, stream)
                stream.synchronize()
                ref = cpu(f)[0].astype(np.float64)
                plan = gpu.kernel_for(f).plan
                assert np.isfinite(out).all()
                assert np.all(np.abs(out[0] - ref) <= allowed(plan, ref, "float32"))
    finally:
        gpu.close()


def test_reusing_a_slot_before_its_kernel_ran_is_an_error_not_a_wrong_tensor() -> None:
    pp, spec, frame = chain(CASES[0])
    gpu = GpuPreprocessor(pp, spec, ring=2, deliver="device")
    try:
        first = gpu(frame)
        gpu(frame)
        gpu(frame)  # the ring of 2 wraps over `first`
        with gpu.current():
            dst = cuda.mem_alloc(first.nbytes)
            with pytest.raises(RuntimeError, match="staging slot reused"):
                first.enqueue_into(int(dst), None)
    finally:
        gpu.close()


@pytest.mark.parametrize("case", [CASES[1], CASES[7]], ids=lambda c: c[0])
def test_mapped_staging_and_registered_camera_buffer(case: tuple) -> None:
    """The Jetson paths (no H2D copy), exercised on this discrete GPU: the kernel reads page-locked mapped
    host memory in place. Correctness only; their speed matters on unified memory, not here."""
    pp, spec, frame = chain(case)
    ref = CpuPreprocessor(pp, spec, ring=1)(frame)[0].astype(np.float64)
    # a camera's own buffer (GenTL buffers are page-aligned: so is an anonymous mmap)
    cam = np.frombuffer(mmap.mmap(-1, frame.image.nbytes), frame.image.dtype).reshape(frame.image.shape)
    mapped = GpuPreprocessor(pp, spec, ring=2, staging="mapped", deliver="host")
    try:
        plan = mapped.kernel_for(frame).plan
        assert mapped.staging == "mapped"
        assert np.all(np.abs(mapped(frame)[0] - ref) <= allowed(plan, ref, "float32"))
        mapped.register_host_buffer(cam)
        cam[...] = frame.image  # the camera fills its buffer after registration, as it would per frame
        staged = mapped.stage(Frame(image=cam, pixel_format=frame.pixel_format, t_grab=0.0))
        assert staged._slot is None  # read in place through the mapping, not copied into a staging slot
        assert np.all(np.abs(staged.to_host()[0] - ref) <= allowed(plan, ref, "float32"))
    finally:
        mapped.close()


def _fixture_threshold(frames: list[Frame]) -> tuple[float, float]:
    """Threshold for the brightness fixture model (used when engines/demo_disc.onnx is absent): the middle of
    the widest gap between the CPU scores of the middle half of the parts, so the set splits about evenly and
    the boundary sits away from parts, as a trained model's does. Returns (threshold, margin to nearest part)."""
    import yaml

    from inspectd.config.schema import InputSpec, Preprocess
    from tests.conftest import DEMO

    recipe = yaml.safe_load((DEMO / "products" / "disc-a.yaml").read_text())
    cpu = CpuPreprocessor(Preprocess(**recipe["preprocess"]), InputSpec(**recipe["model"]["input"]), ring=1)
    means = np.sort([float(cpu(f).mean()) for f in frames])
    mid = means[len(means) // 4: 3 * len(means) // 4]
    i = int(np.argmax(np.diff(mid)))
    return float((mid[i] + mid[i + 1]) / 2), float((mid[i + 1] - mid[i]) / 2)


def test_station_gpu_path_and_verdicts_identical_on_demo_set(tmp_path: Path) -> None:
    """The station's `preprocess: gpu` builds the GPU preprocessor through pipeline.runtime; on 200 fresh
    synthetic parts the verdicts equal the CPU path's. Uses engines/demo_disc.onnx when present, otherwise
    the brightness fixture model (the run's output says which)."""
    from inspectd.camera.parts import make_part, random_kind
    from inspectd.config.load import load_config
    from inspectd.decide import decide
    from inspectd.pipeline.runtime import build_runtime
    from inspectd.preprocess.gpu import GpuPreprocessor as Gpu
    from tests.conftest import DEMO_MODEL, write_station
    from tests.onnx_models import brightness_model

    rng = np.random.default_rng(20261124)
    frames = [Frame(image=make_part(rng, 448, random_kind(rng, 0.5))[0], pixel_format="Mono8", t_grab=0.0)
              for _ in range(200)]
    model = None
    if DEMO_MODEL.exists():
        print("model: engines/demo_disc.onnx")
    else:
        thr, margin = _fixture_threshold(frames)
        model = brightness_model(tmp_path / "b.onnx", threshold=thr)
        print(f"model: brightness fixture (demo model absent), threshold {thr:.4f}, margin {margin:.1e}")
    runtimes = {}
    for where in ("cpu", "gpu"):
        (tmp_path / where).mkdir()
        cfg = load_config(write_station(tmp_path / where, {"preprocess": where}, model=model))
        runtimes[where] = build_runtime(cfg.station, cfg.products["disc-a"])
    assert isinstance(runtimes["gpu"].preprocess, Gpu)
    verdicts, max_score_diff = {"cpu": [], "gpu": []}, 0.0
    for frame in frames:
        scores = {}
        for where, rt in runtimes.items():
            findings = rt.postprocess(rt.backend.infer(rt.preprocess(frame)))
            verdicts[where].append(decide(findings, rt.product).outcome)
            scores[where] = np.array(list(findings.scores.values()))
        max_score_diff = max(max_score_diff, float(np.abs(scores["cpu"] - scores["gpu"]).max()))
    rejected = sum(v.value == "reject" for v in verdicts["cpu"])
    print(f"200 parts: {rejected} rejected by the CPU path; max score difference {max_score_diff:.2e}")
    assert 0 < rejected < 200, "the set must hold both verdicts for the comparison to mean anything"
    assert verdicts["cpu"] == verdicts["gpu"]
    runtimes["gpu"].preprocess.close()
    for rt in runtimes.values():
        rt.close()
