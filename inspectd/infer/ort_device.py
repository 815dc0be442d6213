"""ONNX Runtime on a CUDA device: the model's input and outputs stay bound to fixed device buffers (IO binding).

GPU preprocessing launches its fused kernel straight into our device input buffer on the stream ONNX Runtime
computes on (`user_compute_stream`), so frame -> tensor -> model -> scores is one ordered stream with no host
round trip; the outputs come back into page-locked host buffers with one async copy each. Fixed addresses are
also what a CUDA graph needs (`cuda_graph: true`), so the same binding serves both.

pycuda is optional here: without it the runner still binds the input on the device (host tensors are copied in
by ONNX Runtime) but cannot take DeviceInput and copies outputs through ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from inspectd.cuda_context import CAPTURES, release_primary
from inspectd.types import ModelInput

if TYPE_CHECKING:
    from inspectd.config.schema import ProductConfig

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
       "tensor(int8)": np.int8, "tensor(int64)": np.int64, "tensor(double)": np.float64}


def quiet_runs(ort: Any) -> Any:
    """RunOptions for per-part runs: a failing run raises (the stage logs it, at powers of two, and fails the part
    safe); ONNX Runtime would also print two lines of its own per failed run and flood stderr."""
    options = ort.RunOptions()
    options.log_severity_level = 4  # fatal only, for runs; the session's own load-time messages stay
    return options



class UserStream:
    """A CUDA stream in the device's primary context (the one ONNX Runtime, TensorRT and GPU preprocessing use)."""

    def __init__(self, cuda: Any, device_id: int) -> None:
        self.cuda = cuda
        cuda.init()
        self.ctx = cuda.Device(device_id).retain_primary_context()
        with self.current():
            self.stream = cuda.Stream()
        self.handle = int(self.stream.handle)

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        self.ctx.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def close(self) -> None:
        """Destroy the stream and release the context, once the session computing on it is gone (ONNX Runtime
        does not own a user stream, and may still use it while it tears down: CUDA graphs, its arena)."""
        if self.stream is None:
            return
        with self.current():
            self.stream.synchronize()
            self.stream = None  # pycuda has no Stream.free: the last reference goes with the context current
        release_primary(self.cuda, self.ctx)  # pycuda's detach() alone would leave it on this thread's stack


def user_stream(device_id: int) -> UserStream | None:
    """Our stream for ONNX Runtime to compute on; None where pycuda is not installed (it then uses its own)."""
    try:
        import pycuda.driver as cuda
    except Exception:  # ImportError, or a pycuda built against an absent libcuda
        return None
    return UserStream(cuda, device_id)


CAPTURE_RUNS = 3  # a thread's first run is regular, ONNX Runtime captures its graph on the second, replays after


def _probe_output_shapes(ort: Any, product: ProductConfig, in_shape: list[int], dtype: Any) -> dict[str, list[int]]:
    """Output shapes for the fixed input, from one CPU run of the model: a graph needs every output bound at a
    fixed address, and outputs declared with symbolic dimensions (a Resize's, say) have a fixed shape once the
    input's is fixed."""
    cpu = ort.InferenceSession(str(product.model.path), providers=["CPUExecutionProvider"])
    values = cpu.run(None, {product.model.input.name: np.zeros(in_shape, dtype)})
    return {o.name: list(v.shape) for o, v in zip(cpu.get_outputs(), values, strict=True)}


def _static(shape: Any) -> list[int] | None:
    """The shape with a dynamic batch dimension fixed to 1; None if another dimension is dynamic."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if dims and dims[0] is None:
        dims[0] = 1
    return None if None in dims else [int(d) for d in dims if d is not None]


class DeviceRunner:
    """One session's IO binding: fixed device input, fixed device outputs, page-locked host copies of them."""

    def __init__(self, session: Any, product: ProductConfig, device_id: int, stream: UserStream | None,
                 cuda_graph: bool = False) -> None:
        import onnxruntime as ort

        self._session, self._stream, self._graph = session, stream, cuda_graph
        self._thread_runs = threading.local()  # runs per calling thread: its graph is captured on its second
        self.captured_on: list[str] = []  # the threads whose CUDA graph was captured, in order (for tests, logs)
        self._outputs: list[tuple[str, Any, np.ndarray | None]] = []  # (name, device OrtValue, pinned host)
        self._binding: Any = None
        self._input: Any = None
        try:
            # No runs here: the runtime's self-check is the first (lazy initialisation, cuDNN's search, shared by
            # the session's threads), and the stage warm-up captures the infer thread's graph (Pipeline.warm); a
            # capture on the loading thread would be one more graph in memory and one more pause of the pipeline.
            self._bind(ort, session, product, device_id, stream, cuda_graph)
        except BaseException:
            self.close()  # pinned outputs already allocated would outlive the refused runtime
            raise

    def _bind(self, ort: Any, session: Any, product: ProductConfig, device_id: int, stream: UserStream | None,
              cuda_graph: bool) -> None:
        self._run_options = quiet_runs(ort)
        if stream is not None:  # run() ends with its own sync of our stream, after the output copies are queued
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        spec = product.model.input
        inp = next(i for i in session.get_inputs() if i.name == spec.name)
        self._in_dtype = _NP.get(inp.type, np.float32)
        in_shape = [1, spec.channels, spec.height, spec.width]
        self._binding = session.io_binding()
        self._input = ort.OrtValue.ortvalue_from_shape_and_type(in_shape, self._in_dtype, "cuda", device_id)
        self._binding.bind_ortvalue_input(spec.name, self._input)
        probed = _probe_output_shapes(ort, product, in_shape, self._in_dtype) if cuda_graph and any(
            _static(o.shape) is None for o in session.get_outputs()) else {}
        for o in session.get_outputs():
            shape = probed.get(o.name) or _static(o.shape)
            if shape is None:
                if cuda_graph:  # a graph replays at fixed addresses: an output allocated per run cannot be one
                    raise ValueError(f"cuda_graph needs static output shapes; {o.name!r} is {o.shape}")
                self._binding.bind_output(o.name, "cuda", device_id)  # allocated by ONNX Runtime per run
                self._outputs.append((o.name, None, None))
                continue
            dtype = _NP.get(o.type, np.float32)
            ov = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", device_id)
            self._binding.bind_ortvalue_output(o.name, ov)
            host = None
            if stream is not None:
                with stream.current():
                    host = stream.cuda.pagelocked_empty(shape, dtype)
            self._outputs.append((o.name, ov, host))
        self.takes_device_input = stream is not None
        self.input_ptr = int(self._input.data_ptr())

    def run(self, tensor: ModelInput) -> dict[str, np.ndarray]:
        # ONNX Runtime keeps a CUDA graph per calling thread (its CUDA provider's per-thread context) and captures
        # it on that thread's second run, in the global capture mode: the pipeline warms its infer thread's before
        # the runtime takes parts (Pipeline.warm). A thread's runs after its first hold the GPU to themselves
        # (CAPTURES): seen on the H200, a capture broken by the preprocess thread's copy failed cublasCreate on
        # every later part (all fail-safe).
        gate = CAPTURES.work
        if self._graph:
            runs = getattr(self._thread_runs, "n", 0)
            if runs < CAPTURE_RUNS:
                self._thread_runs.n = runs + 1
                if runs == 1:
                    self.captured_on.append(threading.current_thread().name)
                if runs:
                    gate = CAPTURES.capture
        with gate():
            return self._run(tensor)

    def _run(self, tensor: ModelInput) -> dict[str, np.ndarray]:
        s = self._stream
        if not isinstance(tensor, np.ndarray):  # DeviceTensor: the preprocessing kernel writes our input buffer
            if s is None:  # no pycuda here, so no shared stream: take it through the host
                tensor = np.asarray(tensor)
            else:
                tensor.enqueue_into(self.input_ptr, s.stream)
        if isinstance(tensor, np.ndarray):
            self._input.update_inplace(np.ascontiguousarray(tensor, dtype=self._in_dtype))
        self._session.run_with_iobinding(self._binding, self._run_options)
        result: dict[str, np.ndarray] = {}
        if s is None:
            for name, value in zip((n for n, _, _ in self._outputs), self._binding.get_outputs(), strict=True):
                result[name] = value.numpy()
            return result
        with s.current():
            for _name, ov, host in self._outputs:
                if ov is None or host is None:
                    continue
                s.cuda.memcpy_dtoh_async(host, int(ov.data_ptr()), s.stream)
            s.stream.synchronize()
        dynamic = {n for n, ov, _ in self._outputs if ov is None}
        if dynamic:
            values = dict(zip((n for n, _, _ in self._outputs), self._binding.get_outputs(), strict=True))
            result.update({n: values[n].numpy() for n in dynamic})
        # copies: the pinned buffers are overwritten by the next part, and sinks (archive: heatmaps) keep them
        result.update({n: host.copy() for n, ov, host in self._outputs if host is not None})
        return {n: result[n] for n, _, _ in self._outputs}

    def close(self) -> None:
        """Free the pinned buffers with their context current (pycuda cannot free them from a GC elsewhere), then
        drop the binding, the bound device buffers and our reference to the session, in that order: the binding
        holds the bound OrtValues and refers to the session, the session must go before the stream it computes on
        (the backend closes that once the session is gone). Idempotent."""
        s = self._stream
        if s is not None and self._outputs:
            with s.current():
                s.stream.synchronize()
                for _, _, host in self._outputs:
                    if host is not None:
                        host.base.free()  # type: ignore[union-attr]  # pycuda PagelockedHostAllocation
        self._outputs.clear()
        if self._binding is not None:
            self._binding.clear_binding_inputs()
            self._binding.clear_binding_outputs()
        self._binding = self._input = self._session = None
