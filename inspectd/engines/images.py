"""Image files -> frames, for the offline tools (quantise, compare, eval, golden) that read folders."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from inspectd.camera.replay import dataset, read_image
from inspectd.errors import CameraError
from inspectd.types import Frame


def load_frame(path: Path, pixel_format: str | None = None, truth: str | None = None,
               ref: str | None = None, cls: str | None = None) -> Frame:
    """A frame from an image file. Without `pixel_format`, a 1-channel file is Mono8 (Mono16 when 16-bit)
    and a colour file RGB8, which is how the replay camera would present them."""
    if pixel_format is None:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise CameraError(f"cannot read image {path}")
        if img.ndim == 2:
            pixel_format = "Mono16" if img.dtype.itemsize == 2 else "Mono8"
        else:
            pixel_format = "RGB8"
            img = read_image(path, pixel_format)
    else:
        img = read_image(path, pixel_format)
    return Frame(image=img, pixel_format=pixel_format, t_grab=time.monotonic(), truth=truth,
                 # ref: the path within its folder, cls: the class-level truth, as the replay camera gives them
                 meta={"file": ref or path.name} | ({"class": cls} if cls else {}))


def labelled_frames(folder: Path, pixel_format: str | None = None, *, require_labels: bool = False,
                    limit: int | None = None) -> list[Frame]:
    """Every image in `folder` (labels from labels.csv or ImageFolder sub-folders: see camera.replay)."""
    if not folder.is_dir():
        raise CameraError(f"image folder not found: {folder}")
    items = dataset(folder)
    if require_labels:
        missing = [it.rel for it in items if it.truth is None]
        if missing:
            raise CameraError(f"{len(missing)} image(s) in {folder} have no label (pass/ reject/ sub-folders or "
                              f"labels.csv), e.g. {missing[:3]}")
    if not items:
        raise CameraError(f"no images in {folder}")
    return [load_frame(it.path, pixel_format, it.truth, it.rel, it.cls) for it in items[:limit]]
