"""Labelled synthetic parts for the demo model's tools (train, eval, dataset), deterministic by seed.

Parts come from `inspectd.camera.parts` at the camera's resolution and go through the
product's own `CpuPreprocessor`, so the tools see exactly the tensors the daemon feeds
the model. Work is split into fixed-size chunks, each with its own seed, so the result
does not depend on how many worker processes generate it.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspectd.camera.parts import DEFECT_KINDS, make_part, random_kind
from inspectd.config.load import resolve_paths, validate
from inspectd.config.schema import ProductConfig
from inspectd.config.yamlfile import read_yaml
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ROOT / "configs/demo/products/disc-a.yaml"
CAMERA_SIZE = 448  # what the synthetic camera serves
GRID = 28  # heatmap cells per side
KINDS = ("good", *DEFECT_KINDS)  # kind index 0 = good part
CHUNK = 32  # parts per seeded chunk


def recipe(path: Path = PRODUCT) -> ProductConfig:
    """The product recipe without requiring its model file (load_product does; the training tool creates it)."""
    doc = read_yaml(path)
    return resolve_paths(validate(doc, ProductConfig), path.parent)


@dataclass
class PartSet:
    """Preprocessed parts, stored compactly as the 8-bit resized image the tensor is an affine map of."""

    pixels: np.ndarray  # N,H,W uint8: the resized image inside CpuPreprocessor
    masks: np.ndarray  # N,GRID,GRID bool: heatmap cell holds a defect pixel
    kinds: np.ndarray  # N int8: index into KINDS
    gain: np.ndarray  # per channel: tensor = pixels * gain + bias (the preprocessing plan)
    bias: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return (self.kinds > 0).astype(np.float32)

    def __len__(self) -> int:
        return len(self.kinds)

    def tensors(self, idx: np.ndarray | slice) -> np.ndarray:
        """Float32 NCHW input exactly as CpuPreprocessor computes it (multiply then add, in float32)."""
        px = self.pixels[idx]
        out = np.empty((len(px), len(self.gain), *px.shape[1:]), np.float32)
        for c in range(len(self.gain)):
            np.multiply(px, self.gain[c], out=out[:, c], dtype=np.float32)
            out[:, c] += self.bias[c]
        return out


def _kinds_for(rng: np.random.Generator, n: int, mix: str) -> list[str | None]:
    if mix == "balanced":  # half good, defects evenly split: the weak kind gets its share
        kinds = [None, None, None, *DEFECT_KINDS]
        return [kinds[i] for i in rng.permutation(np.arange(n) % len(kinds))]
    if mix == "good":  # good parts only: what teaching an anomaly model starts from
        return [None] * n
    if mix == "natural":  # the synthetic camera's mix of defect kinds, half the parts defective
        return [random_kind(rng, 0.5) for _ in range(n)]
    raise ValueError(f"unknown mix {mix!r}")


def raw_parts(seed: int, chunk: int, n: int, mix: str) -> Iterator[tuple[np.ndarray, np.ndarray, str | None]]:
    """Camera-resolution parts of one chunk: (mono8 image, defect mask, kind)."""
    rng = np.random.default_rng([seed, chunk])
    for kind in _kinds_for(rng, n, mix):
        image, mask = make_part(rng, CAMERA_SIZE, kind)
        yield image, mask, kind


def _chunk(args: tuple[int, int, int, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seed, chunk, n, mix = args
    product = recipe()
    prep = CpuPreprocessor(product.preprocess, product.model.input)
    pixels, masks, kinds = [], [], []
    for image, mask, kind in raw_parts(seed, chunk, n, mix):
        frame = Frame(image=image, pixel_format="Mono8", t_grab=0.0)
        tensor = prep(frame)[0]
        plan = prep.plan_for(frame)
        # Keep the 8-bit resized image and prove the daemon's tensor is rebuilt from it bit for bit.
        px = np.rint((tensor[0] - plan.bias[0]) / plan.gain[0]).astype(np.uint8)
        for c in range(tensor.shape[0]):
            rebuilt = np.multiply(px, plan.gain[c], dtype=np.float32) + plan.bias[c]
            if not np.array_equal(rebuilt, tensor[c]):
                raise RuntimeError("preprocessed tensor is not an affine map of one 8-bit image")
        h, w = mask.shape
        cells = mask.reshape(GRID, h // GRID, GRID, w // GRID).any(axis=(1, 3))
        pixels.append(px)
        masks.append(cells)
        kinds.append(KINDS.index(kind or "good"))
    return np.stack(pixels), np.stack(masks), np.asarray(kinds, np.int8)


def make_set(seed: int, count: int, mix: str = "balanced", workers: int = 2) -> PartSet:
    """`count` preprocessed parts; same seed and count give the same set whatever `workers` is."""
    jobs = [(seed, i, min(CHUNK, count - i * CHUNK), mix) for i in range((count + CHUNK - 1) // CHUNK)]
    if workers > 1:
        # fork: workers inherit the imports; generation runs before the trainer starts torch threads
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_chunk, jobs, chunksize=1)
    else:
        parts = [_chunk(j) for j in jobs]
    product = recipe()
    prep = CpuPreprocessor(product.preprocess, product.model.input)
    plan = prep.plan_for(Frame(image=np.zeros((CAMERA_SIZE, CAMERA_SIZE), np.uint8), pixel_format="Mono8",
                               t_grab=0.0))
    return PartSet(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   np.concatenate([p[2] for p in parts]), plan.gain.copy(), plan.bias.copy())
