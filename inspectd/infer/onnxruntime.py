"""ONNX Runtime backend: the embedded default (CPU), and the GPU through its CUDA and TensorRT providers.

The station lists execution providers in order of preference. A GPU provider that is asked for must be the one
that runs: ONNX Runtime itself silently falls back to the CPU when a provider cannot load its libraries, which on
a line would turn a 2 ms model into a 20 ms one and every part into a deadline fail-safe. So a configured GPU
provider that did not come up refuses the start (exit 3, the cause named), unless `allow_fallback` says a slower
CPU run is acceptable.
"""

from __future__ import annotations

import traceback
import weakref
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from inspectd.errors import BackendUnavailable, ModelError
from inspectd.infer.base import TensorInfo, check_io, sha256_file
from inspectd.infer.config import CpuProvider, CudaProvider, OnnxRuntimeConfig, TensorrtProvider
from inspectd.infer.ort_device import quiet_runs
from inspectd.types import ModelInput

if TYPE_CHECKING:
    from inspectd.config.schema import ProductConfig

log = structlog.get_logger("inspectd.onnxruntime")

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(double)": "float64"}


_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}


def _provider_options(p: CpuProvider | CudaProvider | TensorrtProvider, stream: int | None) -> dict[str, str]:
    if isinstance(p, CudaProvider):
        opts = {"device_id": str(p.device_id), "cudnn_conv_algo_search": p.cudnn_conv_algo_search.upper(),
                "use_tf32": str(int(p.tf32))}
        if p.cuda_graph:
            opts["enable_cuda_graph"] = "1"
        if stream is not None:  # the GPU preprocessing kernel and the model then run in order on one stream
            opts["user_compute_stream"] = str(stream)
        return opts
    if isinstance(p, TensorrtProvider):
        opts = {"device_id": str(p.device_id), "trt_fp16_enable": str(p.fp16), "trt_int8_enable": str(p.int8)}
        if p.engine_cache is not None:
            opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(p.engine_cache))
        if stream is not None:
            opts["user_compute_stream"] = str(stream)
        return opts
    return {}


def _why_missing(ort: Any, wanted: list[str]) -> str:
    """Explain an absent provider: usually the CPU-only wheel, or both wheels installed at once."""
    dists = {d: _version(d) for d in ("onnxruntime", "onnxruntime-gpu")}
    have = ", ".join(f"{d} {v}" for d, v in dists.items() if v) or "no onnxruntime distribution"
    hint = "install the `gpu` extra (onnxruntime-gpu) in place of onnxruntime"
    if dists["onnxruntime"] and dists["onnxruntime-gpu"]:
        hint = ("both onnxruntime and onnxruntime-gpu are installed and share one module: "
                "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`")
    return (f"this ONNX Runtime ({have}) offers {', '.join(ort.get_available_providers())}, not "
            f"{', '.join(wanted)}; {hint}")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, cfg: OnnxRuntimeConfig, product: ProductConfig) -> None:
        self.cfg, self.product = cfg, product
        self.model_sha256 = ""
        self.providers: list[str] = []  # what the session really runs on, first = preferred
        self._session: Any = None
        self._run_options: Any = None
        self._outputs: list[str] = []
        self._device: Any = None  # DeviceRunner when a GPU provider runs: IO binding, device input
        self._stream: Any = None  # ort_device.UserStream the session computes on (pycuda present, GPU provider)

    @property
    def accepts_device_input(self) -> bool:
        """GPU preprocessing may hand us DeviceInput (its kernel writes into our device input buffer)."""
        return self._device is not None and self._device.takes_device_input

    @property
    def cuda_device(self) -> int:
        gpu = self.cfg.gpu
        return gpu.device_id if gpu is not None else 0

    def load(self) -> None:
        try:
            self._load()
        except BaseException as e:
            # A refused model must not keep a stream, a context retain or pinned buffers. The finished frames in
            # the traceback still hold the session as a local: cleared, so close() sees it gone.
            traceback.clear_frames(e.__traceback__)
            self.close()
            raise

    def _load(self) -> None:
        import onnxruntime as ort

        path = self.product.model.path
        if not path.is_file() or path.stat().st_size == 0:
            raise ModelError(f"model file missing or empty: {path}")
        gpu = self.cfg.gpu
        wanted = [_ORT_NAMES[p.name] for p in self.cfg.providers]
        if gpu is not None and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when that is how they were installed
        missing = [w for w in wanted if w not in ort.get_available_providers()]
        if missing and not self.cfg.allow_fallback:
            raise BackendUnavailable(f"product {self.product.name!r}: {_why_missing(ort, missing)}")
        stream = None
        if gpu is not None and not missing:
            from inspectd.infer.ort_device import user_stream

            stream = self._stream = user_stream(gpu.device_id)  # None without pycuda: ORT then uses its own
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.cfg.intra_op_threads
        opts.inter_op_num_threads = self.cfg.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.cfg.graph_optimization]
        providers = [(_ORT_NAMES[p.name], _provider_options(p, stream.handle if stream else None))
                     for p in self.cfg.providers if _ORT_NAMES[p.name] not in missing]
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers or None)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"cannot load model {path}: {e}") from None
        active = session.get_providers()
        dropped = [w for w in wanted if w not in active and w not in missing]
        if dropped and not self.cfg.allow_fallback:
            # ONNX Runtime logged the cause (missing libcudart/libcudnn/libnvinfer, wrong driver) just above.
            raise BackendUnavailable(
                f"product {self.product.name!r}: {', '.join(dropped)} did not load for {path.name} (ONNX Runtime's "
                f"error above names the missing library; `python -c 'import onnxruntime as o; o.preload_dlls()'` "
                f"checks CUDA and cuDNN); session would run on {', '.join(active)}")

        def info(args: Any) -> list[TensorInfo]:
            return [TensorInfo(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]

        check_io(self.product, info(session.get_inputs()), info(session.get_outputs()))
        self.model_sha256 = sha256_file(path)
        self._session = session
        self._run_options = quiet_runs(ort)
        self.providers = active
        self._outputs = [o.name for o in session.get_outputs()]
        if gpu is not None and active[0] != "CPUExecutionProvider":
            from inspectd.infer.ort_device import DeviceRunner

            self._device = DeviceRunner(session, self.product, gpu.device_id, stream,
                                        cuda_graph=isinstance(gpu, CudaProvider) and gpu.cuda_graph)

    def infer(self, tensor: ModelInput) -> dict[str, np.ndarray]:
        """A host array, or (GPU preprocessing) a DeviceTensor: on a GPU provider its kernel is launched into our
        device input buffer; on the CPU it is read through `__array__` (a device-to-host copy)."""
        assert self._session is not None, "load() first"
        if self._device is not None:
            return self._device.run(tensor)
        host = tensor if isinstance(tensor, np.ndarray) else np.asarray(tensor)
        values = self._session.run(self._outputs, {self.product.model.input.name: host}, self._run_options)
        return dict(zip(self._outputs, values, strict=True))

    def close(self) -> None:
        """Release the session and what it computes with, in order: the device runner's pinned buffers and
        binding, the session (ONNX Runtime frees its CUDA arena, cuDNN/cuBLAS handles and CUDA graphs when the
        InferenceSession goes), then our stream. Idempotent."""
        device, session = self._device, self._session
        self._device = self._session = None
        if device is not None:
            device.close()
        gone = weakref.ref(session) if session is not None else None
        del device, session
        stream, self._stream = self._stream, None
        if stream is None:
            return
        if gone is not None and gone() is not None:
            # Still referred to elsewhere: destroying the stream under a live session would break its next run or
            # its teardown. Leave both to the garbage collector and say so (it would be a leak to chase).
            log.warning("ort_session_still_referenced", product=self.product.name,
                        model=self.product.model.path.name)
            return
        stream.close()

    def describe(self) -> Mapping[str, str]:
        device = "cpu" if not self.providers or self.providers[0] == "CPUExecutionProvider" else \
            f"cuda:{self.cuda_device}"
        return {"backend": self.name, "model": self.product.model.path.name, "sha256": self.model_sha256,
                "precision": self.product.model.input.dtype, "device": device,
                "providers": ",".join(p.removesuffix("ExecutionProvider").lower() for p in self.providers)}
