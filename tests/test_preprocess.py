"""Preprocessing numerics against plain numpy references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspectd.config.schema import InputSpec, Preprocess, Roi
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.preprocess.plan import BAYER_TO_CV_RGB, make_plan
from inspectd.types import Frame

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def frame(img: np.ndarray, fmt: str = "Mono8") -> Frame:
    return Frame(image=img, pixel_format=fmt, t_grab=0.0)


def normalise(x: np.ndarray, mean=MEAN, std=STD, scale=1 / 255) -> np.ndarray:
    """HxWxC float -> CxHxW normalised, the numpy reference."""
    c = x.shape[2]
    m, s = np.resize(np.array(mean), c), np.resize(np.array(std), c)
    return ((x * scale - m) / s).transpose(2, 0, 1).astype(np.float32)


def box_mean(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img.reshape(h // f, f, w // f, f, *img.shape[2:]).astype(np.float64).mean(axis=(1, 3))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), factor=st.sampled_from([1, 2, 3, 4]), x=st.integers(0, 8), y=st.integers(0, 8))
def test_roi_area_resize_and_normalise_match_numpy(seed: int, factor: int, x: int, y: int) -> None:
    rng = np.random.default_rng(seed)
    out = 32
    img = rng.integers(0, 256, (out * factor + 8, out * factor + 8), dtype=np.uint8)
    pp = Preprocess(roi=Roi(x=x, y=y, width=out * factor, height=out * factor), resize="area")
    tensor = CpuPreprocessor(pp, InputSpec(width=out, height=out))(frame(img))
    roi = img[y:y + out * factor, x:x + out * factor]
    ref = normalise(np.repeat(box_mean(roi, factor)[..., None], 3, axis=2))
    assert tensor.shape == (1, 3, out, out) and tensor.dtype == np.float32
    # cv2 INTER_AREA rounds to uint8 first: at most half a grey level off
    assert np.abs(tensor[0] - ref).max() <= 0.5 / 255 / min(STD) + 1e-5


def test_area_keeps_a_thin_scratch_that_decimation_loses() -> None:
    img = np.full((448, 448), 100, np.uint8)
    img[:, 201] = 255  # a 1-px bright scratch on an odd column
    area = CpuPreprocessor(Preprocess(resize="area"), InputSpec(width=224, height=224))(frame(img))[0, 0]
    decimated = normalise(np.repeat(img[::2, ::2, None].astype(np.float64), 3, axis=2))[0]
    background = area[:, 10].mean()
    assert area[:, 100].mean() - background > 0.5 * (155 / 2 / 255 / STD[0])  # half of the full-res contrast survives
    assert np.allclose(decimated, decimated[0, 0])  # the strided downscale never saw the scratch


@pytest.mark.parametrize("pfnc", sorted(BAYER_TO_CV_RGB))
def test_bayer_mapping_recovers_colour(pfnc: str) -> None:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[...] = (200, 100, 30)
    pattern = pfnc[5:7]  # e.g. 'RG': colour at (0,0) and (0,1); the second row follows
    second = {"RG": "GB", "BG": "GR", "GB": "RG", "GR": "BG"}[pattern]
    mosaic = np.zeros((64, 64), np.uint8)
    idx = {"R": 0, "G": 1, "B": 2}
    for (dy, dx), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern + second, strict=True):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, idx[colour]]
    pp = Preprocess(color="rgb", resize="stretch", scale=1.0, mean=(0,), std=(1,))
    t = CpuPreprocessor(pp, InputSpec(width=64, height=64))(frame(mosaic, pfnc))
    assert np.allclose(t[0, :, 8:56, 8:56].reshape(3, -1).mean(axis=1), (200, 100, 30), atol=1)


@pytest.mark.parametrize("fmt,conv", [("RGB8", lambda x: x), ("BGR8", lambda x: x[..., ::-1])])
@pytest.mark.parametrize("color", ["rgb", "bgr", "mono"])
def test_colour_orders(fmt: str, conv, color: str) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[...] = (200, 100, 30)
    channels = 1 if color == "mono" else 3
    pp = Preprocess(color=color, resize="stretch", scale=1.0, mean=(0,), std=(1,))
    t = CpuPreprocessor(pp, InputSpec(width=16, height=16, channels=channels))(frame(np.ascontiguousarray(conv(rgb)),
                                                                                     fmt))
    want = {"rgb": (200, 100, 30), "bgr": (30, 100, 200), "mono": (round(0.299 * 200 + 0.587 * 100 + 0.114 * 30),)}
    assert np.allclose(t[0].reshape(channels, -1).mean(axis=1), want[color], atol=1)


def test_mono12_uses_the_same_recipe_as_mono8() -> None:
    img8 = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    pre = CpuPreprocessor(Preprocess(resize="stretch"), InputSpec(width=64, height=64))
    t8 = pre(frame(img8)).copy()
    t12 = pre(frame((img8.astype(np.uint32) * 4095 // 255).astype(np.uint16), "Mono12"))
    assert np.abs(t8 - t12).max() < 0.02


def test_letterbox_keeps_aspect_and_pads_black() -> None:
    img = np.full((100, 200), 255, np.uint8)
    pp = Preprocess(resize="letterbox", scale=1 / 255, mean=(0,), std=(1,))
    t = CpuPreprocessor(pp, InputSpec(width=64, height=64))(frame(img))[0, 0]
    plan = make_plan(pp, InputSpec(width=64, height=64), 200, 100, "Mono8")
    assert (plan.fit_w, plan.fit_h, plan.pad_x, plan.pad_y) == (64, 32, 0, 16)
    assert np.allclose(t[:16], 0) and np.allclose(t[48:], 0) and np.allclose(t[16:48], 1)


def test_float16_output_and_ring_buffers() -> None:
    pre = CpuPreprocessor(Preprocess(), InputSpec(width=8, height=8, dtype="float16"), ring=3)
    a = pre(frame(np.zeros((8, 8), np.uint8)))
    b = pre(frame(np.full((8, 8), 255, np.uint8)))
    assert a.dtype == np.float16 and a is not b and not np.allclose(a, b)  # a is still valid after b


def test_roi_outside_frame_is_a_clear_error() -> None:
    pre = CpuPreprocessor(Preprocess(roi=Roi(x=10, width=100)), InputSpec(width=8, height=8))
    with pytest.raises(ValueError, match="does not fit a 64x64 frame"):
        pre(frame(np.zeros((64, 64), np.uint8)))


def test_opencv_bayer_names_are_what_plan_says() -> None:
    """Guard against an OpenCV release renaming its Bayer codes."""
    for cv_name in BAYER_TO_CV_RGB.values():
        assert hasattr(cv2, "COLOR_" + cv_name)
