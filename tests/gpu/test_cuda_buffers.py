"""The pycuda memory/stream layer on a real GPU; skipped without pycuda and a CUDA device.

TensorRT is not on the GPU machine either: the last tests drive TensorRTBackend (verification, contexts,
profiles, buffers, addresses, streams, threads) with a stand-in for the tensorrt module whose
execute_async_v3 launches a real CUDA kernel on the backend's stream at the addresses the backend set.
"""

from __future__ import annotations

import hashlib
import threading
import time
import types

import numpy as np
import pytest
import yaml

cuda = pytest.importorskip("pycuda.driver", reason="pycuda not installed (the [tensorrt] extra)")
try:
    cuda.init()
    HAVE_GPU = cuda.Device.count() > 0
except cuda.Error:  # driver present but no device
    HAVE_GPU = False
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_GPU, reason="no CUDA device")]

from pycuda.compiler import SourceModule  # noqa: E402  (needs the guard above)

from inspectd.errors import ModelError  # noqa: E402
from inspectd.infer.cuda_buffers import CudaDevice, SlotPool, StreamSlot, TensorSlot  # noqa: E402

KERNELS = r"""
extern "C" __global__ void affine(const float *x, float *y, int n, int spin) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    for (int k = 0; k < spin; ++k) v = v * 1.0000001f;   // tunable work per element
    y[i] = 2.0f * x[i] + 1.0f + (v - x[i]) * 0.0f;
}
// one thread per batch item: logits[n] = (s, -s), s = the input weighted by position and channel (NCHW), so
// a transposed (NHWC), channel-swapped or shifted binding gives another value than the reference
extern "C" __global__ void weighted_logits(const float *x, float *logits, int batch, int C, int H, int W) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= batch) return;
    int per_item = C * H * W;
    float s = 0.f;
    for (int c = 0; c < C; ++c)
        for (int h = 0; h < H; ++h)
            for (int w = 0; w < W; ++w)
                s += x[n * per_item + (c * H + h) * W + w] * ((c + 1) + 0.5f * h / H - 0.25f * w / W);
    logits[2 * n] = s / per_item;
    logits[2 * n + 1] = -s / per_item;
}
"""


@pytest.fixture(scope="module")
def device():
    dev = CudaDevice(0)
    with dev:
        yield dev
    dev.close()


@pytest.fixture(scope="module")
def kernels(device):
    mod = SourceModule(KERNELS, no_extern_c=True)
    return mod.get_function("affine"), mod.get_function("weighted_logits")


def weighted(x: np.ndarray) -> float:
    """numpy twin of the weighted_logits kernel for one NCHW item."""
    c, h, w = np.meshgrid(np.arange(x.shape[-3]), np.arange(x.shape[-2]), np.arange(x.shape[-1]), indexing="ij")
    wt = (c + 1) + 0.5 * h / x.shape[-2] - 0.25 * w / x.shape[-1]
    return float((x.reshape(wt.shape) * wt).sum() / wt.size)


def _plan(shape):
    return [TensorSlot("x", True, np.dtype(np.float32), shape), TensorSlot("y", False, np.dtype(np.float32), shape)]


def _affine_exec(kernel, slot: StreamSlot, n: int, spin: int = 0):
    def execute(handle: int) -> None:
        assert handle == slot.handle  # the slot's own stream
        kernel(np.intp(slot.buffers["x"].ptr), np.intp(slot.buffers["y"].ptr), np.int32(n), np.int32(spin),
               block=(256, 1, 1), grid=((n + 255) // 256, 1), stream=slot.stream)
    return execute


def test_device_identity(device):
    print(f"\nGPU: {device.name}, sm {device.compute_capability}, {device.total_memory / 2**30:.1f} GiB, "
          f"pycuda CUDA {cuda.get_version()}, driver {cuda.get_driver_version()}")
    assert int(device.compute_capability.split(".")[0]) >= 3 and device.total_memory > 2**30


def test_round_trip_through_pinned_buffers_on_one_stream(device, kernels):
    affine, _ = kernels
    slot = StreamSlot(cuda, _plan((4, 3, 32, 32)))
    buf = slot.buffers["x"]
    assert isinstance(buf.host.base, cuda.HostAllocation)  # page-locked, so the copies are truly async
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)  # batch 2 of max 4
    out = slot.run({"x": x}, _affine_exec(affine, slot, x.size), {"y": x.shape})
    np.testing.assert_allclose(out["y"], 2 * x + 1, rtol=1e-6)
    assert slot.last_ms > 0
    again = slot.run({"x": x + 1}, _affine_exec(affine, slot, x.size), {"y": x.shape})
    np.testing.assert_allclose(out["y"], 2 * x + 1, rtol=1e-6)  # the first result was a copy, untouched
    np.testing.assert_allclose(again["y"], 2 * x + 3, rtol=1e-6)
    with pytest.raises(ValueError, match="exceeds the buffer"):
        slot.upload("x", np.zeros((5, 3, 32, 32), np.float32))
    slot.free()


def test_eight_streams_from_eight_threads_are_correct_and_overlap(device, kernels):
    affine, _ = kernels
    shape, spin, rounds = (1, 3, 128, 128), 2000, 40
    n = int(np.prod(shape))

    def run_all(contexts: int) -> tuple[float, SlotPool]:
        slots = [StreamSlot(cuda, _plan(shape)) for _ in range(contexts)]
        pool = SlotPool(slots)
        errors: list[str] = []

        def worker(k: int) -> None:
            with device:  # a CUDA context is current per thread
                for r in range(rounds):
                    x = np.full(shape, k * 1000 + r, np.float32)
                    with pool.acquire(timeout=30) as slot:
                        y = slot.run({"x": x}, _affine_exec(affine, slot, n, spin), {"y": shape})["y"]
                    if not np.allclose(y, 2 * x + 1):
                        errors.append(f"thread {k} round {r}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        for s in slots:
            s.free()
        assert errors == []
        return elapsed, pool

    one, _ = run_all(1)
    eight, pool = run_all(8)
    assert pool.peak_in_use > 1  # several contexts really were in flight at once
    print(f"\n8 threads x {rounds} inferences: 1 stream {one * 1e3:.1f} ms, 8 streams {eight * 1e3:.1f} ms "
          f"({one / eight:.2f}x), peak contexts in use {pool.peak_in_use}")


# -- TensorRTBackend on the GPU, TensorRT replaced by a stand-in ------------------------------------------------
def _fake_trt(weighted_logits, streams_by_handle, calls: list[str]):
    """The slice of the tensorrt module TensorRTBackend uses, with the TensorRT 10 semantics it relies on."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.30"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.nptype = lambda dt: {"FLOAT": np.float32}[dt]
    H = W = 64

    class Context:
        def __init__(self):
            self.profile, self.shapes, self.addr = None, {}, {}

        def set_optimization_profile_async(self, index, stream):
            calls.append("profile")
            self.profile = index
            return index == 0

        def set_input_shape(self, name, shape):
            assert self.profile == 0, "profile must be selected before shapes"
            ok = name == "input" and 1 <= shape[0] <= 4 and tuple(shape[1:]) == (3, H, W)
            if ok:
                self.shapes["input"] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            return self.shapes["input"] if name == "input" else (self.shapes["input"][0], 2)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, handle):
            assert set(self.addr) == {"input", "logits"}, "every I/O tensor needs an address"
            calls.append("execute")
            n = self.shapes["input"][0]
            weighted_logits(np.intp(self.addr["input"]), np.intp(self.addr["logits"]), np.int32(n), np.int32(3),
                        np.int32(H), np.int32(W), block=(32, 1, 1), grid=(1, 1), stream=streams_by_handle(handle))
            return True

    class Engine:
        num_io_tensors, num_optimization_profiles = 2, 1
        names = ("input", "logits")

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "input" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def get_tensor_shape(self, name):
            return (-1, 3, H, W) if name == "input" else (-1, 2)

        def get_tensor_profile_shape(self, name, profile):
            assert name == "input" and profile == 0
            return [(1, 3, H, W), (1, 3, H, W), (4, 3, H, W)]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            assert data == b"FAKE-ENGINE" * 100, "only verified bytes may reach deserialisation"
            return Engine()

    trt.Runtime = Runtime
    return trt


def _standin_backend(device, kernels, tmp_path, monkeypatch, contexts: int):
    """A TensorRTBackend over a manifest-checked engine file, TensorRT replaced by the stand-in above."""
    from inspectd.config.load import load_product
    from inspectd.engines.manifest import Manifest, ProfileSpec, write_engine
    from inspectd.infer import tensorrt as trt_mod
    from inspectd.infer.base import sha256_file
    from tests.engine_fixtures import product_dict
    from tests.onnx_models import brightness_model

    _, weighted_logits = kernels
    onnx = brightness_model(tmp_path / "m.onnx", 64, 64)
    engine = tmp_path / "m.fp16.engine"
    data = b"FAKE-ENGINE" * 100
    write_engine(engine, data, Manifest(
        engine_file=engine.name, engine_sha256=hashlib.sha256(data).hexdigest(), engine_bytes=len(data),
        onnx_file=str(onnx), onnx_sha256=sha256_file(onnx), runtime="tensorrt", trt_version="10.3.0.30",
        gpu_name=device.name, compute_capability=device.compute_capability, precision="fp16",
        profiles=[ProfileSpec(input="input", min=(1, 3, 64, 64), opt=(1, 3, 64, 64), max=(4, 3, 64, 64))],
        workspace_mb=256, build_seconds=0.0, built_at="2026-11-24T21:00:00+00:00", build_host="test"))
    pr = product_dict(engine)
    pr["model"]["input"].update(width=64, height=64)
    pr["model"]["heatmap_output"] = None
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pr))
    product = load_product(tmp_path / "p.yaml")

    calls: list[str] = []
    backend = trt_mod.TensorRTBackend(trt_mod.TensorRTConfig(type="tensorrt", contexts=contexts), product)

    def stream_of(handle):
        return next(c.slot.stream for c in backend._contexts if c.slot.handle == handle)

    monkeypatch.setattr(trt_mod, "load_trt", lambda runtime: _fake_trt(weighted_logits, stream_of, calls))
    backend.load()
    return backend, product, calls, engine


def test_gpu_preprocessing_writes_straight_into_the_engine_input(device, kernels, tmp_path, monkeypatch):
    """preprocess: gpu + tensorrt: the fused kernel fills the engine's input buffer on the context's stream, in the
    engine's layout: colour frames and a position-weighted stand-in engine, so a transposed or channel-swapped
    binding fails."""
    from inspectd.preprocess.cpu import CpuPreprocessor
    from inspectd.preprocess.gpu import make_gpu_preprocessor
    from inspectd.types import Frame

    backend, product, calls, _ = _standin_backend(device, kernels, tmp_path, monkeypatch, contexts=2)
    try:
        gpu = make_gpu_preprocessor(product, backend, 4)
        cpu = CpuPreprocessor(product.preprocess, product.model.input)
        rng = np.random.default_rng(5)
        for i in range(6):
            # a gradient across the columns and channels of different levels: a transposed or channel-swapped
            # tensor changes the weighted sum (random noise alone would not show a transposition)
            ramp = np.linspace(0, 200, 128)[None, :, None] * np.array([0.3, 0.6, 1.0])[None, None, :]
            img = (ramp + rng.integers(0, 50, (128, 128, 3))).astype(np.uint8)
            frame = Frame(image=img, pixel_format="RGB8", t_grab=0.0)
            staged = gpu(frame)
            assert hasattr(staged, "enqueue_into"), "the TensorRT backend must get a DeviceInput, not host data"
            logits = backend.infer(staged)["logits"]
            ref = cpu(frame)[0]
            want = weighted(ref)
            assert abs(float(logits[0, 0]) - want) < 1e-2, (i, float(logits[0, 0]), want)
            # the check can see layout errors: each is further from the reference than the tolerance
            for wrong in (ref[::-1], ref.transpose(0, 2, 1)):
                assert abs(weighted(np.ascontiguousarray(wrong)) - want) > 5e-2
        assert calls.count("execute") == 6
    finally:
        backend.close()


def test_tensorrt_backend_contexts_buffers_and_streams(device, kernels, tmp_path, monkeypatch):
    from inspectd.infer import tensorrt as trt_mod

    backend, product, calls, engine = _standin_backend(device, kernels, tmp_path, monkeypatch, contexts=4)
    try:
        assert calls.count("profile") == 4 and len({c.slot.handle for c in backend._contexts}) == 4
        assert backend.describe()["device"].startswith(device.name)
        errors: list[str] = []

        def worker(k: int) -> None:
            rng = np.random.default_rng(k)  # one generator per thread
            for _ in range(25):
                x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32) + k
                out = backend.infer(x)
                if out["logits"].shape != (1, 2) or not np.allclose(out["logits"][0, 0], weighted(x[0]), atol=1e-3):
                    errors.append(f"thread {k}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and calls.count("execute") == 100
        # a batch change resets the input shape on the context
        batch = np.random.default_rng(9).standard_normal((3, 3, 64, 64)).astype(np.float32)
        np.testing.assert_allclose(backend.infer(batch)["logits"][:, 0], [weighted(b) for b in batch], atol=1e-3)
        assert all(ms > 0 for ms in backend.last_gpu_ms())
        print(f"\nTensorRTBackend (stand-in engine) on {device.name}: 4 contexts, 101 inferences, "
              f"last event-timed round trips {' '.join(f'{ms:.3f}' for ms in backend.last_gpu_ms())} ms")
    finally:
        backend.close()
    assert backend._device is None and backend._contexts == []

    # a tampered engine is refused before TensorRT sees it, and the refused backend releases the GPU
    engine.write_bytes(b"FAKE-ENGINE" * 99 + b"EVIL-ENGINE")
    calls.clear()
    refused = trt_mod.TensorRTBackend(trt_mod.TensorRTConfig(type="tensorrt"), product)
    with pytest.raises(ModelError, match="does not match its manifest"):
        refused.load()
    assert calls == [] and refused._device is None
