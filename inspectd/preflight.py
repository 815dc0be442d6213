"""check-config's second half: what `run` would refuse or run wrongly, found before it runs.

The schema (config/load.py) says whether each file is well formed. Here each product's runtime is built exactly as
`run` builds it (the model opened by the station's backend, its inputs, outputs and class count checked against
the recipe, the self-check on a dummy input, the golden gate), ROIs are checked against the camera's frame size,
and the files and folders `run` needs are looked for. Every problem is `file:line: key: message`; what cannot be
checked on this machine (a GPU backend on a CPU box, a GenICam camera's frame size) is a note, not a problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from inspectd.camera.config import GenICamConfig, ReplayConfig, SyntheticConfig
from inspectd.config.load import ConfigReport, format_error
from inspectd.config.schema import ProductConfig, StationConfig
from inspectd.config.yamlfile import YamlDoc
from inspectd.errors import BackendUnavailable, ConfigError, InspectdError


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def preflight(report: ConfigReport) -> Preflight:
    out = Preflight()
    st, doc = report.station, report.station_doc
    if st is None or doc is None:
        return out
    frame = _frame_size(st, doc, out)
    for name, product in report.products.items():
        pdoc = report.docs[name]
        _check_runtime(st, product, pdoc, out)
        if frame is not None:
            _check_roi(product, pdoc, frame, out)
    _check_outputs(st, doc, out)
    return out


def _check_runtime(st: StationConfig, product: ProductConfig, doc: YamlDoc, out: Preflight) -> None:
    """Build the product's runtime as `run` does: backend load + IO/class checks + self-check, then golden."""
    from inspectd.engines.golden import require_golden
    from inspectd.pipeline.runtime import build_runtime

    try:
        rt = build_runtime(st, product)
    except BackendUnavailable as e:
        out.notes.append(f"{doc.path}: model not opened on this machine: {e}")
        return
    except InspectdError as e:
        out.problems.extend(format_error(doc, ("model", "path"), line) for line in str(e).splitlines() if line)
        return
    except Exception as e:  # a model ONNX Runtime cannot even parse: still a line for the technician
        out.problems.append(format_error(doc, ("model", "path"), f"{type(e).__name__}: {e}"))
        return
    try:
        require_golden(rt, product)
    except InspectdError as e:
        out.problems.extend(format_error(doc, ("golden",), line.strip()) for line in str(e).splitlines() if line)
    finally:
        rt.close()


def _frame_size(st: StationConfig, doc: YamlDoc, out: Preflight) -> tuple[int, int] | None:
    cam = st.camera
    if isinstance(cam, SyntheticConfig):
        return cam.size, cam.size
    if isinstance(cam, ReplayConfig):
        from inspectd.camera.replay import labelled_images, read_image

        if not cam.folder.is_dir():
            out.problems.append(format_error(doc, ("camera", "folder"), f"folder not found: {cam.folder}"))
            return None
        try:
            items = labelled_images(cam.folder, cam.labels)
        except ConfigError as e:  # a labels file or folder layout problem: already file:line
            out.problems.extend(e.problems)
            return None
        if not items:
            out.problems.append(format_error(doc, ("camera", "folder"), f"no images in {cam.folder}"))
            return None
        try:
            image = read_image(items[0][0], cam.pixel_format)
        except Exception as e:
            out.problems.append(format_error(doc, ("camera", "folder"), f"{items[0][0].name}: {e}"))
            return None
        return image.shape[1], image.shape[0]
    if isinstance(cam, GenICamConfig):
        w, h = cam.features.get("Width"), cam.features.get("Height")
        if isinstance(w, int) and isinstance(h, int):
            return w, h
        out.notes.append(f"{doc.path}: ROIs not checked: the frame size comes from the camera (set camera.features "
                         f"Width and Height to check them here)")
    return None


def _check_roi(product: ProductConfig, doc: YamlDoc, frame: tuple[int, int], out: Preflight) -> None:
    fw, fh = frame
    roi = product.preprocess.roi
    x, y, w, h = roi.box(fw, fh)
    if w <= 0 or h <= 0 or x + w > fw or y + h > fh:
        out.problems.append(format_error(doc, ("preprocess", "roi"),
                                         f"x={x} y={y} width={w} height={h} is not inside the camera's "
                                         f"{fw}x{fh} frame"))


def _check_outputs(st: StationConfig, doc: YamlDoc, out: Preflight) -> None:
    """Where run writes: the journal's folder and (if on) the archive must be creatable and writable."""
    targets: list[tuple[tuple[str, ...], Path]] = [(("journal", "path"), st.journal.path.parent)]
    if st.archive.enabled:
        targets.append((("archive", "path"), st.archive.path))
    for loc, folder in targets:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            out.problems.append(format_error(doc, loc, f"cannot write under {folder} "
                                                       f"({existing or folder} is not a writable folder)"))
