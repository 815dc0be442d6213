"""Run two models (backends or precisions) on the same images: output differences and verdict agreement."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from inspectd.config.schema import ProductConfig
from inspectd.decide import decide
from inspectd.engines.manifest import ENGINE_SUFFIXES, read_manifest
from inspectd.infer.base import Backend
from inspectd.infer.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from inspectd.pipeline.runtime import ProductRuntime
from inspectd.postprocess import Postprocessor
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame


def with_model(product: ProductConfig, model: Path) -> ProductConfig:
    return product.model_copy(update={"model": product.model.model_copy(update={"path": model.resolve()})})


def model_precision(model: Path) -> str:
    """fp32/fp16/int8 as the file declares it: Q/DQ nodes make an ONNX INT8; engines say it in their manifest."""
    if model.suffix in ENGINE_SUFFIXES:
        return read_manifest(model).precision
    m = onnx.load(str(model), load_external_data=False)
    if any(n.op_type == "QuantizeLinear" for n in m.graph.node):
        return "int8"
    elem = m.graph.input[0].type.tensor_type.elem_type if m.graph.input else onnx.TensorProto.FLOAT
    return "fp16" if elem == onnx.TensorProto.FLOAT16 else "fp32"


def make_backend_for(product: ProductConfig, threads: int = 1) -> Backend:
    """ONNX files run on ONNX Runtime (CPU), engine files on TensorRT; chosen by the file name."""
    if product.model.path.suffix in ENGINE_SUFFIXES:
        from inspectd.infer.config import TensorRTConfig
        from inspectd.infer.tensorrt import TensorRTBackend

        return TensorRTBackend(TensorRTConfig(type="tensorrt"), product)
    return OnnxRuntimeBackend(OnnxRuntimeConfig(type="onnxruntime", intra_op_threads=threads), product)


def runtime_for_model(product: ProductConfig, model: Path, threads: int = 1) -> ProductRuntime:
    p = with_model(product, model)
    backend = make_backend_for(p, threads)
    backend.load()
    return ProductRuntime(p, CpuPreprocessor(p.preprocess, p.model.input, ring=2), backend, Postprocessor(p))


@contextlib.contextmanager
def runtimes_for_models(product: ProductConfig, a: Path, b: Path) -> Iterator[tuple[ProductRuntime, ProductRuntime]]:
    """Runtimes for two models, both closed on the way out (the first also when the second fails to load)."""
    ra = runtime_for_model(product, a)
    try:
        rb = runtime_for_model(product, b)
        try:
            yield ra, rb
        finally:
            rb.close()
    finally:
        ra.close()


@dataclass
class OutputDiff:
    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.count if self.count else 0.0


@dataclass
class CompareReport:
    a: str
    b: str
    images: int = 0
    agree: int = 0
    diffs: dict[str, OutputDiff] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.images if self.images else 1.0

    def table(self, show: int | None = 20) -> str:
        """`show`: list at most this many differing images (None: all); the rest are counted, never hidden."""
        lines = [f"compare {self.a}  vs  {self.b}  on {self.images} image(s)",
                 f"{'output':<16}{'max |a-b|':>12}{'mean |a-b|':>12}"]
        lines += [f"{name:<16}{d.max_abs:>12.5f}{d.mean_abs:>12.6f}" for name, d in self.diffs.items()]
        lines.append(f"verdict agreement: {self.agree}/{self.images} ({100 * self.agreement:.2f} %)")
        listed = self.disagreements if show is None else self.disagreements[:show]
        lines += [f"  differs: {d}" for d in listed]
        if len(listed) < len(self.disagreements):
            lines.append(f"  ... and {len(self.disagreements) - len(listed)} more difference(s) not listed "
                         f"({len(self.disagreements)} in all; --show 0 lists every one)")
        return "\n".join(lines)


def accumulate(diffs: dict[str, OutputDiff], a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in a.keys() & b.keys():
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        if x.shape != y.shape:
            raise ValueError(f"output {name!r}: shape {x.shape} vs {y.shape}")
        d = np.abs(x - y)
        acc = diffs.setdefault(name, OutputDiff())
        acc.max_abs = max(acc.max_abs, float(d.max(initial=0.0)))
        acc.sum_abs += float(d.sum())
        acc.count += d.size


def compare(a: ProductRuntime, b: ProductRuntime, frames: Sequence[Frame], names: tuple[str, str]) -> CompareReport:
    report = CompareReport(*names)
    for frame in frames:
        outs = []
        for rt in (a, b):
            out = rt.backend.infer(rt.preprocess(frame))
            outs.append(({k: np.array(v, copy=True) for k, v in out.items()}, rt))
        (oa, ra), (ob, rb) = outs
        accumulate(report.diffs, oa, ob)
        va = decide(ra.postprocess(oa), ra.product).outcome.value
        vb = decide(rb.postprocess(ob), rb.product).outcome.value
        report.images += 1
        if va == vb:
            report.agree += 1
        else:
            report.disagreements.append(f"{frame.meta.get('file', frame.frame_id)}: {va} vs {vb}")
    return report


def model_batch(model: Path) -> int | None:
    """The first input's batch dimension when the ONNX file fixes it (e.g. 1); None when it is dynamic."""
    m = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return None


@dataclass
class SpeedCheck:
    """Verdict agreement and inference speed of a candidate model (INT8) against its reference (FP32)."""

    report: CompareReport
    ms_a: float  # p50 of backend.infer, reference
    ms_b: float  # candidate

    def warnings(self) -> list[str]:
        out = []
        if self.ms_b >= self.ms_a:
            out.append(f"WARNING: {self.report.b} is not faster than {self.report.a} on this machine "
                       f"(p50 {self.ms_b:.2f} ms vs {self.ms_a:.2f} ms): keep the FP32 model here")
        if self.report.agree < self.report.images:
            out.append(f"WARNING: {self.report.b} disagrees with {self.report.a} on "
                       f"{self.report.images - self.report.agree} of {self.report.images} image(s) "
                       f"({100 * self.report.agreement:.1f} % agreement): check with `inspectd eval`")
        return out

    def summary(self) -> str:
        return "\n".join([self.report.table(show=10),
                          f"inference p50: {self.report.a} {self.ms_a:.2f} ms, {self.report.b} {self.ms_b:.2f} ms "
                          f"({self.ms_a / self.ms_b if self.ms_b else float('inf'):.2f}x)", *self.warnings()])


def speed_check(a: ProductRuntime, b: ProductRuntime, frames: Sequence[Frame], names: tuple[str, str],
                repeat: int = 3) -> SpeedCheck:
    """compare() on `frames`, then the p50 of `repeat` timed passes of each backend (after one warm-up pass)."""
    import time

    report = compare(a, b, frames, names)
    p50 = []
    for rt in (a, b):
        tensors = [np.array(rt.preprocess(f), copy=True) for f in frames]
        for t in tensors[:3]:
            rt.backend.infer(t)
        times = []
        for _ in range(repeat):
            for t in tensors:
                t0 = time.perf_counter()
                rt.backend.infer(t)
                times.append((time.perf_counter() - t0) * 1e3)
        p50.append(float(np.percentile(times, 50)))
    return SpeedCheck(report, p50[0], p50[1])
