"""FP16 variant of an ONNX model for GPU providers (ONNX Runtime CUDA/TensorRT): weights and arithmetic in half
precision, inputs and outputs left in float32 so the recipe and GPU preprocessing stay as they are.

Check the result with `inspectd compare` on line images before a recipe points at it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Fp16Result:
    src: Path
    out: Path
    src_bytes: int
    out_bytes: int
    fp16_initializers: int

    def summary(self) -> str:
        return (f"wrote {self.out} ({self.out_bytes / 1e6:.2f} MB, from {self.src_bytes / 1e6:.2f} MB; "
                f"{self.fp16_initializers} weights in float16; inputs/outputs stay float32). Check it: "
                f"inspectd compare --product RECIPE --a {self.src.name} --b {self.out.name} --images DIR")


def convert_fp16(src: Path, out: Path) -> Fp16Result:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _topological_sort(model.graph)  # the converter appends its input casts at the end; the ONNX checker refuses that
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, str(tmp))
    os.chmod(tmp, 0o644)  # the service's own user reads it
    tmp.replace(out)
    halves = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return Fp16Result(src, out, src.stat().st_size, out.stat().st_size, halves)


def _topological_sort(graph: Any) -> None:
    """Reorder the graph's nodes so each comes after the producers of its inputs (Kahn's algorithm, stable)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or an undefined input near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
