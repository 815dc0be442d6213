"""Replay camera: a folder of images, looping, optionally labelled.

Labels come from `labels.csv` (`file,label` with label pass|reject) or from
sub-folders named `pass/` and `reject/`; unlabelled images have truth None.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from inspectd.camera.bank import FrameBank, Shot
from inspectd.camera.config import ReplayConfig
from inspectd.errors import CameraError

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


class ReplaySource(FrameBank):
    name = "replay"

    def __init__(self, cfg: ReplayConfig) -> None:
        super().__init__(cfg.pixel_format, cfg.rate_hz, loop=cfg.loop)
        self.cfg = cfg

    def _make_bank(self) -> list[Shot]:
        if not self.cfg.folder.is_dir():
            raise CameraError(f"replay folder not found: {self.cfg.folder}")
        items = labelled_images(self.cfg.folder)
        if not items:
            raise CameraError(f"no images in {self.cfg.folder}")
        bank = [Shot(read_image(p, self.cfg.pixel_format), label, {"file": p.name}) for p, label in items]
        for shot in bank:
            shot.image.setflags(write=False)  # frames are shared downstream and by every lap
        return bank
