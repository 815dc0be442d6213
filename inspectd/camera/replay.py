"""Replay camera: a folder of images, looping, optionally labelled.

Labels come from `labels.csv` (`file,label` with label pass|reject) or from
sub-folders named `pass/` and `reject/`; unlabelled images have truth None.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from inspectd.camera.config import ReplayConfig
from inspectd.camera.pacing import Pacer
from inspectd.errors import CameraError
from inspectd.types import Frame

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".pgm", ".ppm"}


def labelled_images(folder: Path) -> list[tuple[Path, str | None]]:
    """Images in `folder` with their labels, in a stable order."""
    labels: dict[str, str] = {}
    csv_path = folder / "labels.csv"
    if csv_path.exists():
        with csv_path.open(newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 2 and row[1].strip() in ("pass", "reject"):
                    labels[row[0].strip()] = row[1].strip()
    out: list[tuple[Path, str | None]] = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = p.relative_to(folder)
        label = labels.get(str(rel)) or labels.get(p.name)
        if label is None and len(rel.parts) > 1 and rel.parts[0] in ("pass", "reject"):
            label = rel.parts[0]
        out.append((p, label))
    return out


def read_image(path: Path, pixel_format: str) -> np.ndarray:
    flag = cv2.IMREAD_COLOR if pixel_format in ("RGB8", "BGR8") else cv2.IMREAD_UNCHANGED
    img = cv2.imread(str(path), flag)
    if img is None:
        raise CameraError(f"cannot read image {path}")
    if pixel_format == "RGB8":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif pixel_format != "BGR8" and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


class ReplaySource:
    name = "replay"

    def __init__(self, cfg: ReplayConfig) -> None:
        self.cfg = cfg
        self._images: list[tuple[np.ndarray, str | None, str]] = []
        self._i = 0
        self._pacer = Pacer(None)
        self._open = False

    def open(self) -> None:
        if not self.cfg.folder.is_dir():
            raise CameraError(f"replay folder not found: {self.cfg.folder}")
        items = labelled_images(self.cfg.folder)
        if not items:
            raise CameraError(f"no images in {self.cfg.folder}")
        self._images = [(read_image(p, self.cfg.pixel_format), label, p.name) for p, label in items]
        for img, _, _ in self._images:
            img.setflags(write=False)
        self._pacer = Pacer(self.cfg.rate_hz)
        self._open = True

    def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    def fire(self) -> None:
        return None  # replay delivers on every grab

    def apply_features(self, features: Mapping[str, object]) -> None:
        return None

    def host_buffers(self) -> list[np.ndarray]:
        return [image for image, _, _ in self._images]

    def sample(self) -> Frame | None:
        if not self._images:
            return None
        image, _, name = self._images[0]
        return Frame(image=image, pixel_format=self.cfg.pixel_format, t_grab=time.monotonic(), meta={"file": name})

    def grab(self, timeout: float) -> Frame | None:
        if not self._open or (not self.cfg.loop and self._i >= len(self._images)):
            time.sleep(timeout)
            return None
        if not self._pacer.wait(timeout):
            return None
        image, truth, name = self._images[self._i % len(self._images)]
        frame_id = self._i
        self._i += 1
        return Frame(image=image, pixel_format=self.cfg.pixel_format, t_grab=time.monotonic(),
                     frame_id=frame_id, truth=truth, meta={"file": name})
