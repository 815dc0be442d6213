"""TensorRT backend (production path) and the one place that imports TensorRT.

Written against the TensorRT 10 name-based tensor API: num_io_tensors / get_tensor_name /
get_tensor_mode / get_tensor_dtype / get_tensor_profile_shape on the engine; set_optimization_profile_async,
set_input_shape, get_tensor_shape, set_tensor_address and execute_async_v3 on each execution context.
Engines are verified against their manifest (sha256, TensorRT version, compute capability, ONNX) before
deserialising, and rebuilt from the ONNX when the config allows it. Memory and streams: cuda_buffers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from inspectd.engines.manifest import (
    ENGINE_SUFFIXES,
    Action,
    HostInfo,
    Manifest,
    decide,
    manifest_path,
    read_manifest,
)
from inspectd.errors import BackendUnavailable, ModelError
from inspectd.infer.base import TensorInfo, check_io
from inspectd.infer.config import Runtime, TensorRTConfig
from inspectd.types import ModelInput

if TYPE_CHECKING:
    from inspectd.config.schema import ProductConfig
    from inspectd.infer.cuda_buffers import CudaDevice, SlotPool, TensorSlot

log = structlog.get_logger("inspectd.tensorrt")

def load_trt(runtime: Runtime = "tensorrt"):
    """The TensorRT Python module for `runtime`; BackendUnavailable when it is not installed."""
    try:
        if runtime == "tensorrt-rtx":
            import tensorrt_rtx as trt
        else:
            import tensorrt as trt
    except ImportError as e:
        pkg = "tensorrt-rtx-cu13" if runtime == "tensorrt-rtx" else "tensorrt (JetPack or NVIDIA's index)"
        raise BackendUnavailable(f"{runtime} is not installed ({e}); install {pkg}") from None
    return trt


def host_info(trt, device: CudaDevice) -> HostInfo:
    from inspectd.engines.build import runtime_name

    return HostInfo(runtime_name(trt), trt.__version__, device.compute_capability, device.name)


def engine_paths(cfg: TensorRTConfig, product: ProductConfig) -> tuple[Path, Path | None]:
    """(engine, ONNX to rebuild from or None)."""
    model = product.model.path
    if model.suffix in ENGINE_SUFFIXES:
        onnx = None
        if manifest_path(model).is_file():
            try:
                onnx = Path(read_manifest(model).onnx_file)
            except ModelError:
                onnx = None
        return model, onnx
    return cfg.engine or model.with_name(f"{model.stem}.{cfg.precision}.engine"), model


def engine_io(trt, engine, profile: int) -> list[tuple[str, bool, np.dtype, tuple[int, ...], tuple[int, ...]]]:
    """(name, is_input, dtype, declared shape, max shape for inputs under `profile`) for every I/O tensor."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        shape = tuple(engine.get_tensor_shape(name))
        max_shape = tuple(engine.get_tensor_profile_shape(name, profile)[2]) if is_input else shape
        out.append((name, is_input, dtype, shape, max_shape))
    return out


class _Context:
    """One execution context with its stream slot and the input shape currently set on it."""

    def __init__(self, context, slot, outputs: list[str]) -> None:
        self.context, self.slot, self.outputs = context, slot, outputs
        self.input_shape: tuple[int, ...] | None = None
        self.output_shapes: dict[str, tuple[int, ...]] = {}


class TensorRTBackend:
    name = "tensorrt"
    accepts_device_input = True  # preprocess: gpu hands us DeviceInput, launched into the engine's input buffer

    def __init__(self, cfg: TensorRTConfig, product: ProductConfig) -> None:
        self.cfg, self.product = cfg, product
        self.model_sha256 = ""
        self.manifest: Manifest | None = None
        self._trt: Any = None  # the tensorrt module (untyped, optional)
        self._device: CudaDevice | None = None
        self._runtime: Any = None  # trt.Runtime / trt.ICudaEngine: TensorRT ships no type information
        self._engine: Any = None
        self._pool: SlotPool[_Context] | None = None
        self._contexts: list[_Context] = []
        self.cuda_device = cfg.device  # the GPU preprocessor uses the same device (primary context)

    # -- load: verify, maybe rebuild, deserialise, one context + buffers per camera -------------------------
    def load(self) -> None:
        from inspectd.infer.cuda_buffers import CudaDevice

        trt = self._trt = load_trt(self.cfg.runtime)
        self._device = CudaDevice(self.cfg.device)
        try:
            self._load(trt)
        except BaseException:
            self.close()  # a refused engine must not leave GPU memory or a context retain behind
            raise

    def _load(self, trt) -> None:
        engine_path, onnx = engine_paths(self.cfg, self.product)
        assert self._device is not None
        with self._device:
            host = host_info(trt, self._device)
            decision = decide(engine_path, host, onnx, self.cfg.rebuild)
            if decision.action is Action.REBUILD:
                assert onnx is not None, "decide() says REBUILD only when there is an ONNX to build from"
                log.warning("engine_rebuild", engine=str(engine_path), reasons=decision.reasons)
                self._rebuild(trt, onnx, engine_path, host)
                decision = decide(engine_path, host, onnx, allow_rebuild=False)
            if decision.action is not Action.LOAD:
                raise ModelError(f"engine {engine_path} not loaded: {decision.message()}")
            self.manifest = read_manifest(engine_path)
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = self._runtime.deserialize_cuda_engine(decision.data)
            if engine is None:
                raise ModelError(f"TensorRT could not deserialise {engine_path} (see its log above)")
            self._engine = engine
            self._open_contexts(trt, engine)
        self.model_sha256 = self.manifest.engine_sha256

    def _rebuild(self, trt, onnx: Path, engine_path: Path, host: HostInfo) -> None:
        from inspectd.engines.build import BuildOptions, BuildProgress, build_engine
        from inspectd.engines.profiles import profiles_for

        opts = BuildOptions(precision=self.cfg.precision, workspace_mb=self.cfg.workspace_mb,
                            timing_cache=self.cfg.timing_cache, gpu_name=host.gpu_name,
                            compute_capability=self.cfg.compute_capability or host.compute_capability)
        profiles = profiles_for([self.product], onnx, self.cfg.max_batch)
        build_engine(trt, onnx, engine_path, profiles, opts, BuildProgress())

    def _open_contexts(self, trt, engine) -> None:
        from inspectd.engines.profiles import pick_profile
        from inspectd.infer.cuda_buffers import SlotPool, StreamSlot

        spec = self.product.model.input
        shape = (1, spec.channels, spec.height, spec.width)
        assert self.manifest is not None
        profile = pick_profile(self.manifest.profiles, shape)
        io = engine_io(trt, engine, profile)
        check_io(self.product, [TensorInfo(n, tuple(d if d > 0 else None for d in s), t.name)
                                for n, inp, t, s, _ in io if inp],
                 [TensorInfo(n, tuple(d if d > 0 else None for d in s), t.name) for n, inp, t, s, _ in io if not inp])
        inputs = [n for n, inp, *_ in io if inp]
        if inputs != [spec.name]:
            raise ModelError(f"engine has inputs {inputs}; inspectd feeds exactly one ({spec.name!r})")
        outputs = [n for n, inp, *_ in io if not inp]
        assert self._device is not None, "load() opens the device first"
        cuda = self._device.cuda
        # All contexts select the same profile: TensorRT 10 lets contexts share one (the former preview
        # feature PROFILE_SHARING_0806 is always on), so one engine serves N cameras without N profiles.
        for _ in range(self.cfg.contexts):
            context = engine.create_execution_context()
            if context is None:
                raise ModelError("TensorRT could not create an execution context (out of GPU memory?)")
            stream = cuda.Stream()
            if not context.set_optimization_profile_async(profile, stream.handle):
                raise ModelError(f"cannot select optimisation profile {profile}")
            stream.synchronize()
            slot = StreamSlot(cuda, self._plan(context, io, outputs), stream)  # one stream per context
            for name, ptr in slot.addresses().items():  # buffers never move: addresses are set once
                if not context.set_tensor_address(name, ptr):
                    raise ModelError(f"TensorRT refused the address of tensor {name!r}")
            ctx = _Context(context, slot, outputs)
            self._set_shape(ctx, shape)
            self._contexts.append(ctx)
        self._pool = SlotPool(self._contexts)

    def _plan(self, context, io, outputs: list[str]) -> list[TensorSlot]:
        """Buffer sizes: inputs at their profile maximum; outputs as TensorRT infers them for that maximum."""
        from inspectd.infer.cuda_buffers import TensorSlot

        slots = []
        for name, is_input, _, _, max_shape in io:
            if is_input and not context.set_input_shape(name, max_shape):
                raise ModelError(f"cannot set input {name!r} to its profile maximum {list(max_shape)}")
        for name, is_input, dtype, _, max_shape in io:
            shape = max_shape if is_input else tuple(context.get_tensor_shape(name))
            slots.append(TensorSlot(name, is_input, dtype, shape))
        if any(d < 0 for s in slots for d in s.max_shape):
            bad = [s.name for s in slots if any(d < 0 for d in s.max_shape)]
            raise ModelError(f"outputs {bad} have data-dependent shapes; inspectd needs shapes fixed by the input")
        return slots

    def _set_shape(self, ctx: _Context, shape: tuple[int, ...]) -> None:
        name = self.product.model.input.name
        if not ctx.context.set_input_shape(name, shape):
            raise ModelError(f"input shape {list(shape)} is outside the engine's optimisation profile")
        ctx.input_shape = shape
        ctx.output_shapes = {o: tuple(ctx.context.get_tensor_shape(o)) for o in ctx.outputs}

    # -- hot path -------------------------------------------------------------------------------------------
    def infer(self, tensor: ModelInput) -> dict[str, np.ndarray]:
        assert self._pool is not None and self._device is not None, "load() first"
        name = self.product.model.input.name
        with self._pool.acquire() as ctx, self._device:
            if tensor.shape != ctx.input_shape:  # only a batch-size change resets the shape
                self._set_shape(ctx, tuple(tensor.shape))

            def execute(stream_handle: int) -> None:
                if not ctx.context.execute_async_v3(stream_handle):
                    raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")

            return ctx.slot.run({name: tensor}, execute, ctx.output_shapes)

    def last_gpu_ms(self) -> list[float]:
        """Event-timed H2D + execute + D2H of each context's last inference."""
        return [c.slot.last_ms for c in self._contexts]

    def close(self) -> None:
        """Call after the inference stage has stopped (the pipeline's ordered shutdown does)."""
        if self._device is not None:
            with self._device:  # TensorRT frees device memory when its objects go: keep the context current
                for ctx in self._contexts:
                    ctx.slot.free()
                self._contexts, self._pool = [], None
                self._engine = self._runtime = None  # contexts first, then engine, then runtime
        if self._device is not None:
            self._device.close()
            self._device = None

    def describe(self) -> Mapping[str, str]:
        m = self.manifest
        return {"backend": self.name, "model": self.product.model.path.name, "sha256": self.model_sha256,
                "precision": m.precision if m else self.cfg.precision,
                "device": f"{self._device.name} (sm {self._device.compute_capability})" if self._device else "cuda",
                "runtime": f"{self.cfg.runtime} {m.trt_version if m else ''}".strip(),
                "contexts": str(self.cfg.contexts)}
