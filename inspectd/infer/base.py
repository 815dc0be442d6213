"""The Backend protocol and the model checks every backend shares."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from inspectd.errors import ModelError
from inspectd.types import ModelInput

if TYPE_CHECKING:  # annotations only: backends check a recipe, they never build one
    from inspectd.config.schema import ProductConfig


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]  # str/None = dynamic dimension
    dtype: str  # numpy dtype name


@runtime_checkable
class Backend(Protocol):
    name: str
    model_sha256: str

    def load(self) -> None:
        """Open the model and check it against the product; raise ModelError when they disagree."""
        ...

    def infer(self, tensor: ModelInput) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name (host arrays the caller may keep)."""
        ...

    def close(self) -> None: ...

    def describe(self) -> Mapping[str, str]:
        """Identity for metrics and logs: backend, model file, sha256, precision, device."""
        ...


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_io(product: ProductConfig, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> None:
    """Compare a model's declared tensors with what the product recipe says; one message per mismatch."""
    spec, ref = product.model.input, product.model
    where = f"model {ref.path.name} for product {product.name!r}"
    problems: list[str] = []
    by_name = {t.name: t for t in inputs}
    if spec.name not in by_name:
        problems.append(f"{where}: no input named {spec.name!r} (model inputs: {', '.join(by_name)})")
    else:
        t = by_name[spec.name]
        want = (None, spec.channels, spec.height, spec.width)
        if len(t.shape) != 4:
            problems.append(f"{where}: input {t.name!r} has shape {list(t.shape)}, expected NCHW (4 dims)")
        else:
            for axis, (have, need) in enumerate(zip(t.shape, want, strict=True)):
                if need is not None and isinstance(have, int) and have > 0 and have != need:
                    problems.append(f"{where}: input {t.name!r} dim {axis} is {have}, recipe says {need} "
                                    f"(model.input: channels={spec.channels} height={spec.height} "
                                    f"width={spec.width})")
        if t.dtype != spec.dtype:
            problems.append(f"{where}: input {t.name!r} is {t.dtype}, recipe says model.input.dtype={spec.dtype}")
    out_by_name = {t.name: t for t in outputs}
    for key, name in (("scores_output", ref.scores_output), ("heatmap_output", ref.heatmap_output)):
        if name is not None and name not in out_by_name:
            problems.append(f"{where}: no output named {name!r} for model.{key} (model outputs: "
                            f"{', '.join(out_by_name)})")
    scores = out_by_name.get(ref.scores_output)
    dims = scores.shape[1:] if scores is not None else ()
    sizes = [d for d in dims if isinstance(d, int) and d > 0]
    if scores is not None and dims and len(sizes) == len(dims):  # N x C, or N x C x 1 x 1 (conv heads); all fixed
        n = math.prod(sizes)
        if n != len(product.classes):
            shown = product.classes if len(product.classes) <= 8 else [*product.classes[:8], "..."]
            problems.append(f"{where}: output {scores.name!r} has {n} classes, recipe lists "
                            f"{len(product.classes)}: {shown}")
    if problems:
        raise ModelError("\n".join(problems))
