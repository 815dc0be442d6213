"""Backend constructors, one entry per backend type (their configs: infer.config)."""

from __future__ import annotations

from collections.abc import Callable

from inspectd.config.schema import ProductConfig
from inspectd.infer.base import Backend
from inspectd.infer.config import BackendConfig, TensorRTConfig
from inspectd.infer.onnxruntime import OnnxRuntimeBackend


def _tensorrt(cfg: TensorRTConfig, product: ProductConfig) -> Backend:
    from inspectd.infer.tensorrt import TensorRTBackend  # needs tensorrt + pycuda (the [tensorrt] extra)

    return TensorRTBackend(cfg, product)


FACTORIES: dict[str, Callable[..., Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": _tensorrt,
}


def make_backend(cfg: BackendConfig, product: ProductConfig) -> Backend:
    return FACTORIES[cfg.type](cfg, product)
