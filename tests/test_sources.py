"""Synthetic and replay sources."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd.camera.replay import ReplayConfig, ReplaySource
from inspectd.camera.synthetic import SyntheticConfig, SyntheticSource
from inspectd.errors import CameraError


def frames(src, n: int):
    return [src.grab(1.0) for _ in range(n)]


def test_synthetic_is_deterministic_by_seed_and_labelled() -> None:
    cfg = SyntheticConfig(type="synthetic", size=64, bank=6, seed=3, defect_rate=0.5)
    a, b = SyntheticSource(cfg), SyntheticSource(cfg)
    a.open()
    b.open()
    fa, fb = frames(a, 8), frames(b, 8)
    assert all(np.array_equal(x.image, y.image) and x.truth == y.truth for x, y in zip(fa, fb, strict=True))
    assert {f.truth for f in fa} <= {"pass", "reject"}
    assert [f.frame_id for f in fa] == list(range(8))
    assert np.array_equal(fa[6].image, fa[0].image)  # the bank loops
    c = SyntheticSource(cfg.model_copy(update={"seed": 4}))
    c.open()
    assert not np.array_equal(c.grab(1.0).image, fa[0].image)


def test_synthetic_software_trigger_waits_for_fire() -> None:
    src = SyntheticSource(SyntheticConfig(type="synthetic", size=32, bank=1, software_trigger=True))
    src.open()
    assert src.grab(0.05) is None
    src.fire()
    assert src.grab(0.05) is not None


@pytest.mark.parametrize("fmt,shape,dtype", [("RGB8", (32, 32, 3), np.uint8), ("BayerRG8", (32, 32), np.uint8),
                                             ("Mono12", (32, 32), np.uint16)])
def test_synthetic_pixel_formats(fmt, shape, dtype) -> None:
    src = SyntheticSource(SyntheticConfig(type="synthetic", size=32, bank=1, pixel_format=fmt))
    src.open()
    f = src.grab(1.0)
    assert f.pixel_format == fmt and f.image.shape == shape and f.image.dtype == dtype


def test_replay_labels_from_csv_and_folders(tmp_path: Path) -> None:
    img = np.full((16, 16), 7, np.uint8)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "labels.csv").write_text("file,label\na.png,reject\nb.png,pass\n")
    (tmp_path / "reject").mkdir()
    cv2.imwrite(str(tmp_path / "reject" / "c.png"), img)
    cv2.imwrite(str(tmp_path / "d.png"), img)
    src = ReplaySource(ReplayConfig(type="replay", folder=tmp_path, loop=True))
    src.open()
    got = {f.meta["file"]: f.truth for f in frames(src, 4)}
    assert got == {"a.png": "reject", "b.png": "pass", "reject/c.png": "reject", "d.png": None}
    assert src.grab(1.0).meta["file"] == "a.png"  # loops


def test_replay_without_loop_stops(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    src = ReplaySource(ReplayConfig(type="replay", folder=tmp_path, loop=False))
    src.open()
    assert src.grab(0.01) is not None and src.grab(0.01) is None


def test_replay_empty_folder_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="no images"):
        ReplaySource(ReplayConfig(type="replay", folder=tmp_path)).open()


def test_rate_limits_frames_and_timeout_is_honoured() -> None:
    import time

    src = SyntheticSource(SyntheticConfig(type="synthetic", size=32, bank=2, rate_hz=50))
    src.open()
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < 0.3:
        n += src.grab(0.1) is not None
    assert 3 <= n <= 17  # 50 Hz for 0.3 s: ~15 frames, never a burst (a loaded machine may deliver fewer)
    slow = SyntheticSource(SyntheticConfig(type="synthetic", size=32, bank=1, rate_hz=2))
    slow.open()
    slow.grab(1.0)
    t0 = time.monotonic()
    assert slow.grab(0.05) is None and time.monotonic() - t0 < 0.4  # next frame is 0.5 s away: give up at timeout
