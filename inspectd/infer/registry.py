"""Backend configs and constructors, one entry per backend type."""

from __future__ import annotations

from collections.abc import Callable

from inspectd.config.base import Model
from inspectd.infer.base import Backend
from inspectd.infer.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from inspectd.infer.tensorrt import TensorRTConfig

BackendConfig = OnnxRuntimeConfig | TensorRTConfig


def _tensorrt(cfg: TensorRTConfig, product) -> Backend:
    from inspectd.infer.tensorrt import TensorRTBackend  # needs tensorrt + pycuda (the [tensorrt] extra)

    return TensorRTBackend(cfg, product)


FACTORIES: dict[str, Callable[..., Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": _tensorrt,
}


def make_backend(cfg: Model, product) -> Backend:
    return FACTORIES[cfg.type](cfg, product)  # type: ignore[attr-defined]
