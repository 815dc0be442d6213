"""Procedural 'machined disc' parts, good or defective, deterministic by seed.

The demo model is trained on these (tools/train_demo_model.py) and the synthetic
camera serves them, so both use this one generator. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from inspectd.pixels import BAYER, COLOUR, MONO, pixel_bits

DEFECT_KINDS = ("scratch", "spot", "chip")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def make_part(
    rng: np.random.Generator, size: int = 224, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One Mono8 part image and its boolean defect mask. `kind` None = good part."""
    s = size / 224.0
    yy, xx = _grid(size)
    cx, cy = size / 2 + rng.uniform(-10, 10) * s, size / 2 + rng.uniform(-10, 10) * s
    radius = rng.uniform(80, 95) * s
    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)

    img = 0.12 + 0.03 * rng.standard_normal((size, size), dtype=np.float32)  # dark conveyor
    ring_f, ph = rng.uniform(0.6, 1.0) / s, rng.uniform(0, 2 * np.pi)
    tex = 0.55 + 0.06 * np.sin(r * ring_f + ph) + 0.03 * np.sin(r * ring_f * 3.1 + 2 * ph)  # turning marks
    g = rng.uniform(0, 2 * np.pi)
    tex += 0.10 * (dx * np.cos(g) + dy * np.sin(g)) / radius  # illumination gradient
    tex += 0.02 * rng.standard_normal((size, size), dtype=np.float32)

    bore_r = radius * rng.uniform(0.18, 0.25)
    solid = np.clip((radius - r) / 1.5, 0, 1) * np.clip((r - bore_r) / 1.5, 0, 1)
    n_holes, a0 = int(rng.integers(4, 7)), rng.uniform(0, 2 * np.pi)
    for k in range(n_holes):  # bolt holes: benign structure the model must not flag
        a = a0 + 2 * np.pi * k / n_holes
        d = np.hypot(xx - (cx + 0.62 * radius * np.cos(a)), yy - (cy + 0.62 * radius * np.sin(a)))
        solid *= np.clip((d - 0.07 * radius) / 1.5, 0, 1)

    defect = np.zeros((size, size), np.float32)

    def point_on_material(rmax: float) -> tuple[float, float]:
        for _ in range(100):
            rr, aa = rng.uniform(0, rmax), rng.uniform(0, 2 * np.pi)
            x0, y0 = cx + rr * np.cos(aa), cy + rr * np.sin(aa)
            if solid[int(np.clip(y0, 0, size - 1)), int(np.clip(x0, 0, size - 1))] > 0.99:
                return x0, y0
        return cx + (bore_r + radius) / 2, cy

    if kind == "scratch":
        for _ in range(int(rng.integers(1, 3))):
            length, a = rng.uniform(20, 90) * s, rng.uniform(0, np.pi)
            x0, y0 = point_on_material(radius * 0.8)
            vx, vy = length * np.cos(a), length * np.sin(a)
            t = np.clip(((xx - x0) * vx + (yy - y0) * vy) / (vx * vx + vy * vy), 0, 1)
            d = np.hypot(xx - (x0 + t * vx), yy - (y0 + t * vy))
            prof = np.exp(-((d / (rng.uniform(0.8, 2.0) * s)) ** 2))
            tex += rng.uniform(0.2, 0.4) * rng.choice([-1, 1]) * prof
            defect = np.maximum(defect, prof * (solid > 0.5))
    elif kind == "spot":
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = point_on_material(radius * 0.85)
            rad = rng.uniform(2, 6) * s
            prof = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * rad * rad))
            tex += rng.uniform(0.2, 0.4) * rng.choice([-1, 1]) * prof
            defect = np.maximum(defect, prof * (solid > 0.5))
    elif kind == "chip":  # a bite out of the rim
        aa, rad = rng.uniform(0, 2 * np.pi), rng.uniform(6, 14) * s
        d = np.hypot(xx - (cx + radius * np.cos(aa)), yy - (cy + radius * np.sin(aa)))
        bitten = solid * np.clip((d - rad) / 1.5, 0, 1)
        defect = solid - bitten
        solid = bitten
    elif kind is not None:
        raise ValueError(f"unknown defect kind {kind!r}; use one of {DEFECT_KINDS}")

    img = img * (1 - solid) + tex * solid
    img *= rng.uniform(0.85, 1.15)  # exposure jitter
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), defect > 0.3


def random_kind(rng: np.random.Generator, defect_rate: float) -> str | None:
    if rng.random() >= defect_rate:
        return None
    return str(rng.choice(DEFECT_KINDS, p=[0.45, 0.3, 0.25]))


def to_pixel_format(mono: np.ndarray, pixel_format: str) -> np.ndarray:
    """Render a Mono8 image in another camera pixel format (grey parts: all channels equal)."""
    if pixel_format == "Mono8":
        return mono
    if pixel_format in MONO:
        return (mono.astype(np.uint16) << (pixel_bits(pixel_format) - 8)).astype(np.uint16)
    if pixel_format in COLOUR:
        return np.repeat(mono[..., None], 3, axis=2)
    if pixel_format in BAYER:
        return mono.copy()  # a grey scene mosaics to the same values at every site
    raise ValueError(f"unsupported pixel format {pixel_format!r}")
