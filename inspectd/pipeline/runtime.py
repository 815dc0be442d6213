"""Everything one product needs to inspect a part, built and checked before it goes live."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from inspectd.config.schema import ProductConfig, StationConfig
from inspectd.errors import ModelError
from inspectd.infer.base import Backend
from inspectd.infer.registry import make_backend
from inspectd.postprocess import BadOutput, Postprocessor
from inspectd.types import Frame, ModelInput


class Preprocessor(Protocol):
    def __call__(self, frame: Frame) -> ModelInput: ...

    def pin_host_buffers(self, buffers: Sequence[np.ndarray]) -> None:
        """Memory frames will be views of (a source's own): the GPU path copies from it without staging."""
        ...


@dataclass(eq=False)  # identity: "is this part's runtime the active one" must not compare recipes
class ProductRuntime:
    product: ProductConfig
    preprocess: Preprocessor
    backend: Backend
    postprocess: Postprocessor
    # Stages hold the runtime while they use it; close_if_unused() closes it only when nobody does, so a
    # runtime retired by a reload is never closed under a part still being inspected with it.
    _users: int = field(default=0, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.product.name

    @property
    def closed(self) -> bool:
        return self._closed

    def hold(self) -> bool:
        """Mark the runtime in use; False when it is already closed (then do not touch it)."""
        with self._lock:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1

    def close_if_unused(self) -> bool:
        """Close now unless a stage holds it; True once closed (by this call or earlier)."""
        with self._lock:
            if self._users > 0:
                return False
            if self._closed:
                return True
            self._closed = True
        self._release_resources()
        return True

    def close(self) -> None:
        """Close regardless of holders: for shutdown, after the stages have stopped. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._release_resources()

    def _release_resources(self) -> None:
        closer = getattr(self.preprocess, "close", None)  # the GPU path owns device buffers and a context
        try:
            if callable(closer):
                closer()
        finally:
            self.backend.close()


def make_preprocessor(station: StationConfig, product: ProductConfig, backend: Backend, ring: int) -> Preprocessor:
    if station.preprocess == "gpu":
        from inspectd.preprocess.gpu import make_gpu_preprocessor  # needs CUDA (pycuda)

        return make_gpu_preprocessor(product, backend, ring)
    from inspectd.preprocess.cpu import CpuPreprocessor

    return CpuPreprocessor(product.preprocess, product.model.input, ring=ring)


def self_check(rt: ProductRuntime) -> None:
    """Run the model once on an all-zero input before it judges any part: a model whose outputs are missing,
    mis-shaped or not finite is refused (ModelError naming the product and the model file). The product's
    golden images, where configured, go through the same output checks in the golden gate."""
    spec = rt.product.model.input
    where = f"product {rt.name!r}: model {rt.product.model.path.name}: self-check on an all-zero input"
    dummy = np.zeros((1, spec.channels, spec.height, spec.width), np.dtype(spec.dtype))
    try:
        outputs = rt.backend.infer(dummy)
    except Exception as e:  # onnxruntime / TensorRT raise their own types
        raise ModelError(f"{where}: inference failed: {type(e).__name__}: {e}") from None
    try:
        rt.postprocess(outputs)
    except BadOutput as e:
        raise ModelError(f"{where}: {e}") from None


def build_runtime(station: StationConfig, product: ProductConfig) -> ProductRuntime:
    """Load the product's model, its stages, and self-check it; raises ModelError if the model does not fit the
    recipe or gives outputs no verdict can rest on."""
    backend = make_backend(station.backend, product)
    backend.load()
    ring = station.pipeline.parts_inside  # more buffers than parts that can be in flight
    try:
        rt = ProductRuntime(product, make_preprocessor(station, product, backend, ring), backend,
                            Postprocessor(product))
    except BaseException:
        backend.close()
        raise
    try:
        self_check(rt)
    except BaseException:
        rt.close()
        raise
    return rt
