"""Preprocessing with OpenCV into preallocated buffers: the reference path."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from inspectd.config.schema import InputSpec, Preprocess
from inspectd.pixels import BAYER, MONO
from inspectd.preprocess.plan import BAYER_TO_CV_RGB, FILTERED, Plan, make_plan
from inspectd.types import Frame

_INTERP = {"area": cv2.INTER_AREA, "stretch": cv2.INTER_LINEAR, "letterbox": cv2.INTER_AREA}


def pil_resample(img: np.ndarray, p: Plan) -> np.ndarray:
    """bilinear / bicubic / resize_crop with Pillow (what torchvision's Resize does on PIL images), on float32
    channels so nothing is rounded: HxWxC float32 of the fitted size."""
    from PIL import Image

    filt = Image.Resampling.BICUBIC if p.resize == "bicubic" else Image.Resampling.BILINEAR
    chans = [img] if img.ndim == 2 else [img[..., c] for c in range(img.shape[2])]
    box = (p.crop_x, p.crop_y, p.crop_x + p.fit_w, p.crop_y + p.fit_h)
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c, np.float32)).resize((p.scaled_w, p.scaled_h), filt)
                      .crop(box), np.float32) for c in chans]
    return np.stack(out, axis=-1)


def to_model_colour(roi: np.ndarray, pixel_format: str, color: str) -> np.ndarray:
    """ROI pixels in the channel order the model wants (HxW for mono, HxWx3 otherwise)."""
    if pixel_format in MONO:
        return roi if color == "mono" else cv2.merge([roi, roi, roi])
    if pixel_format in BAYER:
        rgb = cv2.cvtColor(roi, getattr(cv2, "COLOR_" + BAYER_TO_CV_RGB[pixel_format]))
    else:
        rgb = roi if pixel_format == "RGB8" else roi[..., ::-1]
    if color == "mono":
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return rgb if color == "rgb" else rgb[..., ::-1]


class CpuPreprocessor:
    """Frame -> NCHW tensor. Output buffers come from a ring so a tensor stays valid while
    later parts are preprocessed (size it above the number of parts in flight)."""

    def __init__(self, pp: Preprocess, spec: InputSpec, ring: int = 8) -> None:
        self.pp, self.spec = pp, spec
        self._plan: Plan | None = None
        self._plan_key: tuple[int, int, str] | None = None
        dtype = {"float16": np.float16, "uint8": np.uint8}.get(spec.dtype, np.float32)
        self._ring = [np.empty((1, spec.channels, spec.height, spec.width), dtype) for _ in range(ring)]
        self._scratch = np.empty((spec.height, spec.width), np.float32)
        self._next = 0

    def pin_host_buffers(self, buffers: Sequence[np.ndarray]) -> None:
        """Nothing to pin on the CPU path."""

    def plan_for(self, frame: Frame) -> Plan:
        h, w = frame.image.shape[:2]
        key = (w, h, frame.pixel_format)
        if self._plan is None or self._plan_key != key:  # computed once per frame geometry
            self._plan = make_plan(self.pp, self.spec, w, h, frame.pixel_format)
            self._plan_key = key
        return self._plan

    def __call__(self, frame: Frame) -> np.ndarray:
        p = self.plan_for(frame)
        x, y, w, h = p.roi
        img = to_model_colour(frame.image[y:y + h, x:x + w], p.pixel_format, p.color)
        if p.resize in FILTERED:
            resized = pil_resample(img, p)
        else:
            resized = img if (w, h) == (p.fit_w, p.fit_h) else cv2.resize(img, (p.fit_w, p.fit_h),
                                                                          interpolation=_INTERP[p.resize])
        if resized.ndim == 2:
            resized = resized[..., None]
        out = self._ring[self._next]
        self._next = (self._next + 1) % len(self._ring)
        if p.resize == "letterbox":
            for c in range(p.channels):
                out[0, c].fill(p.pad_value[c])
        y0, x0 = p.pad_y, p.pad_x
        for c in range(p.channels):
            dst = self._scratch[y0:y0 + p.fit_h, x0:x0 + p.fit_w]
            np.multiply(resized[..., c], p.gain[c], out=dst, dtype=np.float32)
            dst += p.bias[c]
            if out.dtype == np.uint8:  # raw pixels for a model that normalises itself: round, saturate
                np.clip(np.rint(dst, out=dst), 0, 255, out=dst)
            out[0, c, y0:y0 + p.fit_h, x0:x0 + p.fit_w] = dst
        return out
