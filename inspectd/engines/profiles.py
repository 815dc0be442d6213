"""Optimisation profiles from product sizes: one engine serving several products of one model.

TensorRT needs a min/opt/max shape per dynamic input; each distinct product input size gets its own
profile (tight profiles tune better than one wide one), and the runtime picks the profile that fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from inspectd.config.schema import ProductConfig
from inspectd.engines.manifest import ProfileSpec
from inspectd.errors import ModelError


def onnx_input_dims(path: Path, name: str) -> tuple[int | None, ...]:
    """Declared dims of one ONNX input; None where the dimension is symbolic (dynamic)."""
    model = onnx.load(str(path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name == name:
            dims = inp.type.tensor_type.shape.dim
            return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)
    names = [i.name for i in model.graph.input]
    raise ModelError(f"{path.name}: no input named {name!r} (inputs: {', '.join(names)})")


def profiles_for(products: Sequence[ProductConfig], onnx_path: Path, max_batch: int = 1) -> list[ProfileSpec]:
    """One profile per distinct (channels, height, width) among `products`, in first-seen order.
    Batch runs 1..max_batch with opt at 1: a station inspects one part at a time per camera."""
    if not products:
        raise ValueError("at least one product is needed to size the profiles")
    name = products[0].model.input.name
    dims = onnx_input_dims(onnx_path, name)
    if len(dims) != 4:
        raise ModelError(f"{onnx_path.name}: input {name!r} has {len(dims)} dims, expected NCHW")
    if dims[0] is not None and dims[0] < max_batch:
        raise ModelError(f"{onnx_path.name}: batch dimension is fixed at {dims[0]}, cannot serve batch {max_batch}")
    out: list[ProfileSpec] = []
    seen: set[tuple[int, int, int]] = set()
    for p in products:
        spec = p.model.input
        if spec.name != name:
            raise ModelError(f"product {p.name!r} names input {spec.name!r}, other products {name!r}: "
                             f"one engine has one input name")
        chw = (spec.channels, spec.height, spec.width)
        for axis, (fixed, want) in enumerate(zip(dims[1:], chw, strict=True), start=1):
            if fixed is not None and fixed != want:
                raise ModelError(f"product {p.name!r} needs dim {axis} = {want}, but {onnx_path.name} fixes it "
                                 f"at {fixed}: export the model with a dynamic {('C', 'H', 'W')[axis - 1]} axis")
        if chw in seen:
            continue
        seen.add(chw)
        batch_max = max_batch if dims[0] is None else dims[0]
        batch_min = 1 if dims[0] is None else dims[0]
        out.append(ProfileSpec(input=name, min=(batch_min, *chw), opt=(batch_min, *chw), max=(batch_max, *chw)))
    return out


def pick_profile(profiles: Sequence[ProfileSpec], shape: tuple[int, ...]) -> int:
    """Index of the tightest profile that accepts `shape` (fewest elements at max)."""
    fits = [i for i, p in enumerate(profiles) if p.accepts(shape)]
    if not fits:
        ranges = ", ".join(f"{list(p.min)}..{list(p.max)}" for p in profiles)
        raise ModelError(f"no optimisation profile accepts input shape {list(shape)} (engine has: {ranges}); "
                         f"rebuild the engine with this product in --product")

    def volume(i: int) -> int:
        n = 1
        for d in profiles[i].max:
            n *= d
        return n

    return min(fits, key=volume)
