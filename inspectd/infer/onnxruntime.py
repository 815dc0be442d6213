"""ONNX Runtime CPU backend: the embedded default that runs anywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from inspectd.config.base import Model
from inspectd.errors import ModelError
from inspectd.infer.base import TensorInfo, check_io, sha256_file
from inspectd.types import ModelInput

if TYPE_CHECKING:  # schema imports OnnxRuntimeConfig from here: a runtime import would be a cycle
    from inspectd.config.schema import ProductConfig

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(double)": "float64"}


class OnnxRuntimeConfig(Model):
    type: Literal["onnxruntime"]
    intra_op_threads: int = Field(1, ge=0, le=256, description="threads inside one operator (0 = all cores)")
    inter_op_threads: int = Field(1, ge=0, le=256, description="threads across operators")
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisation level")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, cfg: OnnxRuntimeConfig, product: ProductConfig) -> None:
        self.cfg, self.product = cfg, product
        self.model_sha256 = ""
        self._session = None
        self._outputs: list[str] = []

    def load(self) -> None:
        import onnxruntime as ort

        path = self.product.model.path
        if not path.is_file() or path.stat().st_size == 0:
            raise ModelError(f"model file missing or empty: {path}")
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
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"cannot load model {path}: {e}") from None

        def info(args) -> list[TensorInfo]:
            return [TensorInfo(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]

        check_io(self.product, info(session.get_inputs()), info(session.get_outputs()))
        self.model_sha256 = sha256_file(path)
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]

    def infer(self, tensor: ModelInput) -> dict[str, np.ndarray]:
        assert self._session is not None, "load() first"
        host = tensor if isinstance(tensor, np.ndarray) else np.asarray(tensor)  # a DeviceTensor: copied to host
        values = self._session.run(self._outputs, {self.product.model.input.name: host})
        return dict(zip(self._outputs, values, strict=True))

    def close(self) -> None:
        self._session = None

    def describe(self) -> Mapping[str, str]:
        return {"backend": self.name, "model": self.product.model.path.name, "sha256": self.model_sha256,
                "precision": self.product.model.input.dtype, "device": "cpu"}
