"""Backend configs, one model per backend type, gathered into `BackendConfig` on `type`.

Kept apart from the backends so the station schema can name them without importing a backend (TensorRT's
engine tooling, CUDA); `infer.registry` maps each config to its backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from inspectd.config.base import Model


class CpuProvider(Model):
    name: Literal["cpu"]


class CudaProvider(Model):
    name: Literal["cuda"]
    device_id: int = Field(0, ge=0, description="CUDA device ordinal")
    cuda_graph: bool = Field(False, description="capture the model once as a CUDA graph and replay it per part "
                                                "(fixed shapes; every node must run on the CUDA provider)")
    tf32: bool = Field(False, description="let Ampere+ GPUs run FP32 convolutions/matmuls in TF32 (faster, ~1e-3 "
                                          "relative error): off, so an FP32 model scores as it was validated")
    cudnn_conv_algo_search: Literal["exhaustive", "heuristic", "default"] = Field(
        "exhaustive", description="cuDNN convolution algorithm search (done once, during warm-up before READY)")


class TensorrtProvider(Model):
    name: Literal["tensorrt"]
    device_id: int = Field(0, ge=0, description="CUDA device ordinal")
    engine_cache: Path | None = Field(None, description="folder where ONNX Runtime keeps built TensorRT engines "
                                                        "(relative to the station file); without it every start "
                                                        "rebuilds them")
    fp16: bool = Field(False, description="let TensorRT run layers in FP16")
    int8: bool = Field(False, description="run Q/DQ (explicitly quantised) INT8 models in INT8")


Provider = Annotated[CpuProvider | CudaProvider | TensorrtProvider, Field(discriminator="name")]


def _cpu_only() -> list[CpuProvider | CudaProvider | TensorrtProvider]:
    return [CpuProvider(name="cpu")]


class OnnxRuntimeConfig(Model):
    type: Literal["onnxruntime"]
    intra_op_threads: int = Field(1, ge=0, le=256, description="threads inside one operator (0 = all cores)")
    inter_op_threads: int = Field(1, ge=0, le=256, description="threads across operators")
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisation level")
    providers: list[Provider] = Field(
        default_factory=_cpu_only,
        description="execution providers in order of preference: tensorrt, cuda, cpu (a name, or a mapping with "
                    "the provider's options)")
    allow_fallback: bool = Field(False, description="start even when a configured GPU provider cannot load "
                                                    "(parts then run on the CPU, slower); off: refuse with exit 3")

    @model_validator(mode="before")
    @classmethod
    def _names_as_mappings(cls, data: Any) -> Any:
        """`providers: [cuda, cpu]` is the short form of `[{name: cuda}, {name: cpu}]`."""
        if isinstance(data, dict) and isinstance(data.get("providers"), list):
            data = {**data, "providers": [{"name": p} if isinstance(p, str) else p for p in data["providers"]]}
        return data

    @property
    def gpu(self) -> CudaProvider | TensorrtProvider | None:
        """The first GPU provider asked for (its device is the one GPU preprocessing writes to)."""
        return next((p for p in self.providers if not isinstance(p, CpuProvider)), None)



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
