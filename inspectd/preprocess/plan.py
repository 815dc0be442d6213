"""Geometry and arithmetic of one preprocessing chain, shared by the CPU and GPU paths.

Everything here is plain numbers computed once per (product, frame size), so both
paths agree by construction and the per-frame work is only the pixel loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inspectd.config.schema import InputSpec, Preprocess
from inspectd.pixels import BAYER, PIXEL_FORMATS, pixel_max

# PFNC names the colour of the top-left pixel; OpenCV names the pattern one row and column in.
# Checked in tests/test_preprocess.py against a mosaic built from a known colour image.
BAYER_TO_CV_RGB = {"BayerRG8": "BayerBG2RGB", "BayerBG8": "BayerRG2RGB",
                   "BayerGB8": "BayerGR2RGB", "BayerGR8": "BayerGB2RGB"}


@dataclass(frozen=True)
class Plan:
    pixel_format: str
    roi: tuple[int, int, int, int]  # x, y, w, h inside the frame
    out_w: int
    out_h: int
    channels: int
    color: str  # rgb | bgr | mono
    resize: str  # area | stretch | letterbox
    # letterbox: the resized image occupies [pad_y : pad_y+fit_h, pad_x : pad_x+fit_w]
    fit_w: int
    fit_h: int
    pad_x: int
    pad_y: int
    gain: np.ndarray  # per output channel: y = x * gain + bias, x in raw pixel units
    bias: np.ndarray
    dtype: str
    # bilinear / bicubic / resize_crop: the ROI is resampled to scaled_w x scaled_h (PIL's antialiased filters)
    # and the fitted image is its window at (crop_x, crop_y); for the other modes scaled = fit, crop = 0.
    scaled_w: int = 0
    scaled_h: int = 0
    crop_x: int = 0
    crop_y: int = 0

    @property
    def pad_value(self) -> np.ndarray:
        """Normalised value of padding (raw 0, black)."""
        return self.bias


def make_plan(pp: Preprocess, spec: InputSpec, frame_w: int, frame_h: int, pixel_format: str) -> Plan:
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"unsupported pixel format {pixel_format!r}; supported: {', '.join(PIXEL_FORMATS)}")
    x, y, w, h = pp.roi.box(frame_w, frame_h)
    if x + w > frame_w or y + h > frame_h or w <= 0 or h <= 0:
        raise ValueError(f"ROI x={x} y={y} w={w} h={h} does not fit a {frame_w}x{frame_h} frame")
    if pixel_format in BAYER and (x % 2 or y % 2):
        raise ValueError("ROI x and y must be even for Bayer formats (the mosaic phase must not change)")
    if pp.resize == "letterbox":
        s = min(spec.width / w, spec.height / h)
        fit_w, fit_h = max(1, round(w * s)), max(1, round(h * s))
    else:
        fit_w, fit_h = spec.width, spec.height
    channels = spec.channels
    color = "mono" if channels == 1 else pp.color
    mean = np.resize(np.asarray(pp.mean, np.float64), channels)
    std = np.resize(np.asarray(pp.std, np.float64), channels)
    # Deeper pixels are brought to the 8-bit scale first so one recipe serves Mono8 and Mono12.
    unit = pp.scale * 255.0 / pixel_max(pixel_format)
    gain = (unit / std).astype(np.float32)
    bias = (-mean / std).astype(np.float32)
    scaled_w, scaled_h, crop_x, crop_y = fit_w, fit_h, 0, 0
    if pp.resize == "resize_crop":  # torchvision Resize(short side) + CenterCrop: cover the input, then crop
        s = max(spec.width / w, spec.height / h) / pp.crop
        scaled_w, scaled_h = max(spec.width, round(w * s)), max(spec.height, round(h * s))
        crop_x, crop_y = round((scaled_w - spec.width) / 2), round((scaled_h - spec.height) / 2)  # as CenterCrop
    return Plan(pixel_format, (x, y, w, h), spec.width, spec.height, channels, color, pp.resize,
                fit_w, fit_h, (spec.width - fit_w) // 2, (spec.height - fit_h) // 2, gain, bias, spec.dtype,
                scaled_w, scaled_h, crop_x, crop_y)


FILTERED = ("bilinear", "bicubic", "resize_crop")  # resampled with PIL's antialiased filters (see resample_taps)


def _triangle(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _cubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def resample_weights(ssize: int, dsize: int, bicubic: bool) -> list[list[tuple[int, float]]]:
    """Per output index (source index, weight), as Pillow's precompute_coeffs (Resample.c) computes them: the
    filter is widened by the downscale factor (antialiasing), so every source pixel contributes."""
    support0, kernel = (2.0, _cubic) if bicubic else (1.0, _triangle)
    scale = ssize / dsize
    filterscale = max(scale, 1.0)
    support = support0 * filterscale
    rows = []
    for xx in range(dsize):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), ssize)
        ws = [kernel((x - center + 0.5) / filterscale) for x in range(xmin, xmax)]
        total = sum(ws)
        rows.append([(xmin + i, w / total if total else 0.0) for i, w in enumerate(ws)])
    return rows
