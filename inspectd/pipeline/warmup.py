"""Warm-up before READY: every product's whole part path (preprocessing kernels compiled, the model's session run,
cuDNN algorithms chosen, CUDA graphs captured) on a frame of the camera's geometry, so the first part after a
start or a reload meets its budget like the thousandth. The model runs on the thread that will run it for the
parts (`infer`: the pipeline's inference thread): ONNX Runtime's CUDA provider keeps its cuBLAS/cuDNN handles and
its CUDA graph per calling thread, so a warm-up anywhere else leaves the first parts to create and capture them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import structlog

from inspectd.camera.base import Source
from inspectd.errors import BadOutput, ModelError
from inspectd.pipeline.runtime import ProductRuntime
from inspectd.types import Frame, ModelInput

Outputs = dict[str, np.ndarray]
OnInferThread = Callable[[Callable[[], tuple[Outputs, str]]], tuple[Outputs, str]]

log = structlog.get_logger("inspectd.warmup")

RUNS = 3  # ONNX Runtime's CUDA graph is captured on an early run; the last run shows the warm time


def warm_up(rt: ProductRuntime, frame: Frame | None, infer: OnInferThread, runs: int = RUNS) -> list[float]:
    """Run `frame` through preprocess -> infer -> postprocess `runs` times, the model through `infer` (which runs
    what it is given on the inference thread); returns each run's ms. Without a frame (geometry not known yet) the
    backend alone was warmed by its load."""
    if frame is None:
        log.info("warm_up_skipped", product=rt.name, why="camera geometry not known yet")
        return []
    times = []
    thread = ""
    for _ in range(runs):
        t0 = time.perf_counter()
        tensor = rt.preprocess(frame)

        def model(tensor: ModelInput = tensor) -> tuple[Outputs, str]:
            return rt.backend.infer(tensor), threading.current_thread().name

        try:
            outputs, thread = infer(model)
            rt.postprocess(outputs)
        except BadOutput as e:  # like the self-check (pipeline.runtime): a model that answers NaN never goes live
            raise ModelError(f"product {rt.name!r}: model {rt.product.model.path.name}: warm-up on a camera "
                             f"frame: {e}") from None
        times.append((time.perf_counter() - t0) * 1e3)
    log.info("warmed_up", product=rt.name, runs_ms=[round(t, 3) for t in times], infer_thread=thread)
    return times


def pin(rt: ProductRuntime, source: Source) -> None:
    """Before a runtime takes parts: its preprocessing pins the memory the source's frames live in."""
    rt.preprocess.pin_host_buffers(source.host_buffers())
