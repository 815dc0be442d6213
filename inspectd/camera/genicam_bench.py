"""Acquisition cost per frame of an open GenICam source, for `inspectd bench` and tools/camera_bench.py.

Two figures: the wall time of a grab at the camera's pace (fire + grab when software-triggered),
and the work per frame once it is in host memory: harvesters' try_fetch of a buffer that is
already waiting, plus the one copy out of the GenTL buffer and handing the buffer back.
Reads the source's internals on purpose: it times exactly the calls grab() makes.
"""

from __future__ import annotations

import statistics
import time

from inspectd.camera.genicam import GenICamSource


def _median_ms(xs: list[float]) -> float:
    return 1e3 * statistics.median(xs) if xs else float("nan")


def acquisition_overhead(src: GenICamSource, seconds: float = 5.0, timeout: float = 2.0) -> dict[str, float]:
    """Measure on `src` (open, connected; free_run or software trigger). Takes ~seconds + 2 s."""
    if src.cfg.trigger == "hardware":
        raise ValueError("needs a camera that delivers on its own: trigger free_run or software")
    software = src.cfg.trigger == "software"
    for _ in range(5):  # warm-up: first buffers, page faults of the frame arrays
        src.fire()
        src.grab(timeout)
    grab_s: list[float] = []
    shape: tuple[int, ...] = ()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        src.fire()
        frame = src.grab(timeout)
        if frame is not None:
            grab_s.append(time.perf_counter() - t0)
            shape = frame.image.shape
    fetch_s: list[float] = []
    copy_s: list[float] = []
    for _ in range(10):  # let buffers fill, then take them as they lie
        with src._lock:
            if software:
                for _ in range(src.cfg.num_buffers - 1):
                    src._ia.remote_device.node_map.TriggerSoftware.execute()
                    time.sleep(0.01)  # TLSimu merges triggers closer than a few ms
            time.sleep(0.2)
            for _ in range(src.cfg.num_buffers - 1):
                t0 = time.perf_counter()
                buf = src._ia.try_fetch(timeout=timeout)
                t1 = time.perf_counter()
                if buf is None:
                    break
                try:
                    src._dev.buffer_to_frame(buf, "", src._copy_out)  # into the frame pool, as grab does
                finally:
                    buf.queue()
                fetch_s.append(t1 - t0)
                copy_s.append(time.perf_counter() - t1)
    fetch_ms, copy_ms = _median_ms(fetch_s), _median_ms(copy_s)
    return {
        "frames": len(grab_s),
        "megapixels": shape[0] * shape[1] / 1e6 if shape else 0.0,
        "fps": len(grab_s) / seconds,
        "grab_ms": _median_ms(grab_s),
        "grab_p99_ms": 1e3 * sorted(grab_s)[int(0.99 * (len(grab_s) - 1))] if grab_s else float("nan"),
        "fetch_ready_ms": fetch_ms,
        "copy_requeue_ms": copy_ms,
        "overhead_per_frame_ms": fetch_ms + copy_ms,
        "missed": src.stats.missed,
        "timeouts": src.stats.timeouts,
    }
