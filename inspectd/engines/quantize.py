"""Explicit INT8: ONNX Runtime static quantisation into a Q/DQ ONNX model.

Q/DQ models carry their own scales, so the same file runs INT8 on ONNX Runtime, TensorRT 10 and
TensorRT 11 (which removed implicit calibration). Scales are symmetric INT8, weights per channel:
the form TensorRT fuses into INT8 kernels.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx

from inspectd.engines.calibrate import CalibrationSet
from inspectd.engines.manifest import atomic_write

Method = Literal["entropy", "percentile", "minmax"]


@dataclass(frozen=True)
class QuantizeReport:
    output: Path
    method: str
    images: int
    seconds: float
    qdq_nodes: int
    quantized_ops: dict[str, int]
    bytes_in: int
    bytes_out: int

    def summary(self) -> str:
        ops = ", ".join(f"{k}×{v}" for k, v in sorted(self.quantized_ops.items()))
        return (f"wrote {self.output} ({self.bytes_out / 1e6:.2f} MB from {self.bytes_in / 1e6:.2f} MB): "
                f"{self.method} calibration on {self.images} image(s) in {self.seconds:.1f} s, "
                f"{self.qdq_nodes} Q/DQ nodes around: {ops or 'nothing'}")


def count_qdq(model: onnx.ModelProto) -> tuple[int, dict[str, int]]:
    """Q/DQ node count, and how many nodes of each type read a DequantizeLinear output (i.e. run INT8)."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    ops = Counter(n.op_type for n in model.graph.node
                  if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_out for i in n.input))
    return qdq, dict(ops)


def quantize_qdq(src: Path, dst: Path, data: CalibrationSet, method: Method = "entropy",
                 percentile: float = 99.999, per_channel: bool = True) -> QuantizeReport:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
             "minmax": CalibrationMethod.MinMax}[method]
    # TensorRT wants symmetric INT8 (zero point 0) and float biases: it rejects DequantizeLinear of int32.
    extra: dict[str, bool | float] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    t0 = time.perf_counter()
    tmp = dst.with_name(f".{dst.name}.partial")  # quantize_static writes in place; publish atomically after
    try:
        quantize_static(str(src), str(tmp), data.ort_reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=calib, extra_options=extra)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        atomic_write(dst, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    qdq, ops = count_qdq(model)
    return QuantizeReport(dst, method, len(data.frames), time.perf_counter() - t0, qdq, ops,
                          src.stat().st_size, dst.stat().st_size)
