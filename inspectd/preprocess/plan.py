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
    return Plan(pixel_format, (x, y, w, h), spec.width, spec.height, channels, color, pp.resize,
                fit_w, fit_h, (spec.width - fit_w) // 2, (spec.height - fit_h) // 2, gain, bias, spec.dtype)
