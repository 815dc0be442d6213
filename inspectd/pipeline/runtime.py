"""Everything one product needs to inspect a part, built and checked before it goes live."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inspectd.config.schema import ProductConfig, StationConfig
from inspectd.infer.base import Backend
from inspectd.infer.registry import make_backend
from inspectd.postprocess import Postprocessor
from inspectd.types import Frame, ModelInput


class Preprocessor(Protocol):
    def __call__(self, frame: Frame) -> ModelInput: ...

    def pin_host_buffers(self, buffers: Sequence[np.ndarray]) -> None:
        """Memory frames will be views of (a source's own): the GPU path copies from it without staging."""
        ...


@dataclass
class ProductRuntime:
    product: ProductConfig
    preprocess: Preprocessor
    backend: Backend
    postprocess: Postprocessor

    @property
    def name(self) -> str:
        return self.product.name

    def close(self) -> None:
        self.backend.close()


def make_preprocessor(station: StationConfig, product: ProductConfig, backend: Backend, ring: int) -> Preprocessor:
    if station.preprocess == "gpu":
        from inspectd.preprocess.gpu import make_gpu_preprocessor  # needs CUDA (pycuda)

        return make_gpu_preprocessor(product, backend, ring)
    from inspectd.preprocess.cpu import CpuPreprocessor

    return CpuPreprocessor(product.preprocess, product.model.input, ring=ring)


def build_runtime(station: StationConfig, product: ProductConfig) -> ProductRuntime:
    """Load the product's model and its stages; raises ModelError if the model does not fit the recipe."""
    backend = make_backend(station.backend, product)
    backend.load()
    ring = station.pipeline.queue_depth * 3 + 4  # more buffers than parts that can be in flight
    return ProductRuntime(product, make_preprocessor(station, product, backend, ring), backend,
                          Postprocessor(product))
