"""Replay camera: a folder of images, served once (or looping), optionally labelled.

Truth comes from a labels file (configurable columns, delimiter and label names, see LabelsConfig) or, for the
images it does not list, from ImageFolder layout: `good/`, `defect/<kind>/`, `<class>/`. A label that names
neither a good nor a defective part is an error with its file:line (or folder), never silently "no truth".
Every frame carries its path relative to the folder (`meta["file"]`, the journal's source_ref) and its
class-level truth (`meta["class"]`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspectd.camera.bank import FrameBank, Shot
from inspectd.camera.config import LabelsConfig, ReplayConfig
from inspectd.errors import CameraError, ConfigError

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".pgm", ".ppm"}


@dataclass(frozen=True)
class Item:
    path: Path
    rel: str  # path relative to the folder, '/'-separated: what the journal's source_ref says
    truth: str | None  # pass | reject
    cls: str | None  # class-level truth: the defect kind or class name


class Labels:
    """Label text -> pass/reject, by the configured names (case-insensitive)."""

    def __init__(self, cfg: LabelsConfig) -> None:
        self.cfg = cfg
        self._map = {s.lower(): "pass" for s in cfg.pass_labels} | {s.lower(): "reject" for s in cfg.reject_labels}

    def truth(self, label: str) -> str | None:
        return self._map.get(label.strip().lower())

    def known(self) -> str:
        return f"pass: {self.cfg.pass_labels}, reject: {self.cfg.reject_labels}"


def _column(spec: str | int, header: list[str] | None, path: Path, what: str) -> int:
    if isinstance(spec, int):
        return spec
    if spec.isdigit():
        return int(spec)
    if header is None:
        raise ConfigError([f"{path}:1: labels.{what}: {spec!r} names a column but the file has no header row "
                          f"(give a 0-based index)"])
    names = [h.strip() for h in header]
    if spec not in names:
        raise ConfigError([f"{path}:1: labels.{what}: no column {spec!r} (columns: {names})"])
    return names.index(spec)


def read_labels(folder: Path, cfg: LabelsConfig) -> dict[str, tuple[str, str]] | None:
    """relative path or bare file name -> (truth, class) from the labels file; None when there is none."""
    path = folder / cfg.file  # an absolute file stays itself
    if not path.is_file():
        return None
    labels = Labels(cfg)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot read labels file: {e}"]) from e
    rows = list(csv.reader(text.splitlines(), delimiter=cfg.delimiter))
    if not rows:
        return {}
    header_row = cfg.header
    if header_row is None:  # auto: a first row whose label cell is no known label names the columns
        probe = cfg.label_column if isinstance(cfg.label_column, int) else 1
        header_row = not (len(rows[0]) > probe and labels.truth(rows[0][probe]) is not None)
    header = rows[0] if header_row else None
    fcol = _column(cfg.file_column if header or isinstance(cfg.file_column, int) else 0, header, path,
                   "file_column")
    lcol = _column(cfg.label_column if header or isinstance(cfg.label_column, int) else 1, header, path,
                   "label_column")
    ccol = _column(cfg.class_column, header, path, "class_column") if cfg.class_column is not None else None
    out: dict[str, tuple[str, str]] = {}
    for line, row in enumerate(rows[1:] if header_row else rows, start=2 if header_row else 1):
        if not row or not any(c.strip() for c in row):
            continue
        need = max(fcol, lcol, ccol if ccol is not None else 0)
        if len(row) <= need:
            raise ConfigError([f"{path}:{line}: {len(row)} column(s), need {need + 1} (delimiter "
                              f"{cfg.delimiter!r})"])
        label = row[lcol].strip()
        truth = labels.truth(label)
        if truth is None:
            raise ConfigError([f"{path}:{line}: unknown label {label!r} (known: {labels.known()}; set "
                              f"camera.labels.pass_labels / reject_labels)"])
        cls = row[ccol].strip() if ccol is not None and row[ccol].strip() else label
        out[row[fcol].strip()] = (truth, cls)
    return out


def dataset(folder: Path, cfg: LabelsConfig | None = None) -> list[Item]:
    """Every image in `folder` (recursively, in a stable order) with its truth and class."""
    cfg = cfg or LabelsConfig()
    table = read_labels(folder, cfg)
    labels = Labels(cfg)
    out: list[Item] = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        rel = p.relative_to(folder)
        key = rel.as_posix()
        truth: str | None = None
        cls: str | None = None
        if table is not None:
            truth, cls = table.get(key) or table.get(p.name) or (None, None)
        if truth is None and len(rel.parts) > 1:  # ImageFolder: the top folder is the label, the next the kind
            top = rel.parts[0]
            truth = labels.truth(top)
            if truth is None:
                raise ConfigError([f"{folder / top}: folder name {top!r} is no known label ({labels.known()}; "
                                  f"set camera.labels.pass_labels / reject_labels, or give a labels file)"])
            cls = rel.parts[1] if len(rel.parts) > 2 else top
        out.append(Item(p, key, truth, cls))
    return out


def labelled_images(folder: Path, cfg: LabelsConfig | None = None) -> list[tuple[Path, str | None]]:
    """Images in `folder` with their pass/reject labels, in a stable order."""
    return [(it.path, it.truth) for it in dataset(folder, cfg)]


def read_image(path: Path, pixel_format: str) -> np.ndarray:
    flag = cv2.IMREAD_COLOR if pixel_format in ("RGB8", "BGR8") else cv2.IMREAD_UNCHANGED
    img = cv2.imread(str(path), flag)
    if img is None:
        raise CameraError(f"cannot read image {path}")
    if img.dtype != np.uint8 and pixel_format.endswith("8"):
        # silently scaled or passed on, a 16-bit file gives tensor values far outside what the model learnt
        raise ConfigError([f"{path}: {img.dtype.itemsize * 8}-bit image in a {pixel_format} replay (set "
                          f"camera.pixel_format: Mono16, or convert the images to 8 bits)"])
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
        if not self.cfg.folder.is_dir():  # a recipe problem: exit 2, which systemd does not restart forever
            raise ConfigError([f"camera.folder: replay folder not found: {self.cfg.folder}"])
        items = dataset(self.cfg.folder, self.cfg.labels)
        if not items:
            raise CameraError(f"no images in {self.cfg.folder}")
        bank = [Shot(read_image(it.path, self.cfg.pixel_format), it.truth,
                     {"file": it.rel} | ({"class": it.cls} if it.cls else {})) for it in items]
        for shot in bank:
            shot.image.setflags(write=False)  # frames are shared downstream and by every lap
        return bank
