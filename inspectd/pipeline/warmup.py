"""Warm-up before READY: every product's whole part path (preprocessing kernels compiled, the model's session run,
cuDNN algorithms chosen, CUDA graphs captured) on a frame of the camera's geometry, so the first part after a
start or a reload meets its budget like the thousandth. Runs while no part is in flight: a CUDA graph capture
must not share the GPU with another thread's copies."""

from __future__ import annotations

import time

import structlog

from inspectd.camera.base import Source
from inspectd.errors import BadOutput, ModelError
from inspectd.pipeline.runtime import ProductRuntime
from inspectd.types import Frame

log = structlog.get_logger("inspectd.warmup")

RUNS = 3  # ONNX Runtime's CUDA graph is captured on an early run; the last run shows the warm time


def warm_up(rt: ProductRuntime, frame: Frame | None, runs: int = RUNS) -> list[float]:
    """Run `frame` through preprocess -> infer -> postprocess `runs` times; returns each run's ms. Without a
    frame (geometry not known yet) the backend alone was warmed by its load."""
    if frame is None:
        log.info("warm_up_skipped", product=rt.name, why="camera geometry not known yet")
        return []
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        try:
            rt.postprocess(rt.backend.infer(rt.preprocess(frame)))
        except BadOutput as e:  # like the self-check (pipeline.runtime): a model that answers NaN never goes live
            raise ModelError(f"product {rt.name!r}: model {rt.product.model.path.name}: warm-up on a camera "
                             f"frame: {e}") from None
        times.append((time.perf_counter() - t0) * 1e3)
    log.info("warmed_up", product=rt.name, runs_ms=[round(t, 3) for t in times])
    return times


def prepare(rt: ProductRuntime, source: Source, frame: Frame | None) -> None:
    """Before a runtime takes parts: pin the source's frame memory for its preprocessing, then warm it up."""
    rt.preprocess.pin_host_buffers(source.host_buffers())
    warm_up(rt, frame)
