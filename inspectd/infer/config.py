"""Backend configs, one model per backend type, gathered into `BackendConfig` on `type`.

Kept apart from the backends so the station schema can name them without importing a backend (TensorRT's
engine tooling, CUDA); `infer.registry` maps each config to its backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from inspectd.config.base import Model

# OnnxRuntimeConfig still lives beside its backend, which imports onnxruntime only in load(): a light import.
from inspectd.infer.onnxruntime import OnnxRuntimeConfig

Runtime = Literal["tensorrt", "tensorrt-rtx"]


class TensorRTConfig(Model):
    type: Literal["tensorrt"]
    runtime: Runtime = Field("tensorrt", description="tensorrt (TensorRT 10/11, Jetson and datacenter GPUs) or "
                             "tensorrt-rtx (TensorRT for RTX, RTX industrial PCs)")
    contexts: int = Field(1, ge=1, le=64, description="execution contexts (one per camera)")
    device: int = Field(0, ge=0, description="CUDA device index")
    engine: Path | None = Field(None, description="engine file; default: <model>.<precision>.engine beside the "
                                "ONNX model named by the product (a product may also name an engine directly)")
    precision: Literal["fp32", "fp16", "int8"] = Field("fp16", description="precision to build when rebuilding")
    rebuild: bool = Field(False, description="rebuild from the ONNX model when the engine is missing, damaged, "
                          "stale or built for another GPU / TensorRT version (else refuse to start)")
    workspace_mb: int = Field(1024, ge=16, description="builder workspace memory-pool limit for rebuilds")
    timing_cache: Path | None = Field(None, description="TensorRT timing cache file reused by rebuilds")
    max_batch: int = Field(1, ge=1, le=256, description="largest batch the engine's profiles accept")
    compute_capability: str | None = Field(None, description="TensorRT-RTX rebuild target (e.g. '8.6'); default: "
                                           "this GPU's")


BackendConfig = OnnxRuntimeConfig | TensorRTConfig
