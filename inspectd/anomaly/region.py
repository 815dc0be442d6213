"""An anomaly map's top region, from model-input fractions back to frame pixels (journal, archive, PLC side)."""

from __future__ import annotations

from inspectd.config.schema import ProductConfig
from inspectd.preprocess.plan import make_plan
from inspectd.types import Frame


def frame_region(region: tuple[float, float, float, float] | None, product: ProductConfig | None,
                 frame: Frame | None) -> tuple[int, int, int, int] | None:
    """The top region in frame pixels (x, y, w, h): the map covers the model input, which is the ROI resized
    (letterbox: inside its padding). None where there is no region, recipe or frame."""
    if region is None or product is None or frame is None:
        return None
    fh, fw = frame.image.shape[:2]
    try:
        plan = make_plan(product.preprocess, product.model.input, fw, fh, frame.pixel_format)
    except ValueError:
        return None
    rx, ry, rw, rh = plan.roi
    sx, sy = rw / plan.fit_w, rh / plan.fit_h
    x0 = (region[0] * plan.out_w - plan.pad_x) * sx
    y0 = (region[1] * plan.out_h - plan.pad_y) * sy
    x1 = x0 + region[2] * plan.out_w * sx
    y1 = y0 + region[3] * plan.out_h * sy
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(rw), x1), min(float(rh), y1)
    return rx + int(x0), ry + int(y0), max(1, round(x1 - x0)), max(1, round(y1 - y0))
