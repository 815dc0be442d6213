"""`inspectd eval`'s misclassified images, written where an ML engineer can look at them: one annotated JPEG per
image (the archive's drawing: ROI, heatmap, verdict, scores) under <folder>/<model>/<truth>_as_<verdict>/, and
misses.csv listing them with their scores."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

from inspectd.archive import Item, annotated_jpeg
from inspectd.config.schema import ProductConfig
from inspectd.engines.evaluate import EvalResult
from inspectd.types import Outcome, Verdict

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def listing(result: EvalResult) -> list[str]:
    """One line per misclassified image: file, truth, verdict, deciding score."""
    return [f"  {m.frame.meta.get('file', '?')}: truth {m.truth}, got {m.verdict} (score {m.score:.4f})"
            for m in result.misses]


def write_misses(result: EvalResult, product: ProductConfig, folder: Path) -> Path:
    """Every misclassified image of `result` as an annotated JPEG; returns the model's folder."""
    out = folder / _UNSAFE.sub("_", result.name)
    out.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with (out / "misses.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("file", "truth", "verdict", "score", "image"))
        for i, m in enumerate(result.misses, 1):
            ref = str(m.frame.meta.get("file", f"image_{i}"))
            v = Verdict(seq=i, part_id=i, product=product.name, outcome=Outcome(m.verdict),
                        reason="" if m.verdict == "pass" else "misclassified", result_code=0,
                        plc_ok=m.verdict == "pass", score=m.score, scores=m.scores, t_trigger=0.0, t_verdict=0.0,
                        truth=m.truth, model_sha256="", stage_ms={}, wall_time=now, source_ref=ref)
            name = out / f"{m.truth}_as_{m.verdict}" / (_UNSAFE.sub("_", ref.replace("/", "__")) + ".jpg")
            name.parent.mkdir(exist_ok=True)
            name.write_bytes(annotated_jpeg(Item(v, m.frame, m.heatmap, product.preprocess.roi)))
            w.writerow((ref, m.truth, m.verdict, f"{m.score:.6f}", str(name.relative_to(out))))
    return out
