"""CUDA context hygiene shared by GPU preprocessing and the GPU backends: releasing our retain of a device's
primary context without leaving it on the thread's stack, and keeping graph captures apart from other GPU work.

Releasing (pycuda):
GPU preprocessing, ONNX Runtime's user stream and the TensorRT backend each retain the primary context through
pycuda (`Device(n).retain_primary_context()`) and release it when their runtime closes, at every reload. pycuda's
`Context.detach()` does that release with `cuDevicePrimaryCtxRelease` after pushing the context onto the driver's
context stack of the calling thread when it is not current -- and never pops it (pycuda 2026.1, src/cpp/cuda.hpp
`context::detach`: "pop is implicit in detach", true of cuCtxDestroy, not of a primary context release). Each
reload would leave one more entry on the main thread's stack, for good. Here the context is pushed through pycuda
first, so the push is ours, and popped from the driver after the release.

Only ctypes and the pycuda objects handed in: pycuda stays an optional dependency.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator
from typing import Any


@functools.cache
def libcuda() -> ctypes.CDLL:
    """The driver library pycuda or the CUDA runtime already loaded (one per process, as the driver is): looked up
    once, because constructing a CDLL per call cost ~15 us of GPU preprocessing's per-frame H2D path."""
    return ctypes.CDLL("libcuda.so.1")


def driver_current() -> int:
    """The calling thread's current CUDA context as the driver sees it (0: none)."""
    ctx = ctypes.c_void_p()
    rc = libcuda().cuCtxGetCurrent(ctypes.byref(ctx))
    if rc != 0:
        raise RuntimeError(f"cuCtxGetCurrent failed with CUDA driver error {rc}")
    return int(ctx.value or 0)


def _driver_pop() -> int:
    """Pop the calling thread's current context; its handle, 0 when the driver refused (nothing to pop)."""
    ctx = ctypes.c_void_p()
    rc = libcuda().cuCtxPopCurrent_v2(ctypes.byref(ctx))
    return int(ctx.value or 0) if rc == 0 else 0


def release_primary(cuda: Any, ctx: Any) -> None:
    """Release `ctx` (from `retain_primary_context()`), leaving this thread's context stack as it found it.

    Call it outside any pycuda context block (nothing pushed through pycuda on this thread)."""
    if cuda.Context.get_current() is not None:  # nested in a pycuda block: its stack is pycuda's to unwind
        ctx.detach()
        return
    handle = int(ctx.handle)
    ctx.push()  # pycuda stack [ctx], driver stack + [ctx]
    ctx.detach()  # current: cuDevicePrimaryCtxRelease; pycuda forgets it, the driver still has it pushed
    try:
        ours = driver_current() == handle
    except RuntimeError:  # the last retain: the context was reset under us, still on the stack
        ours = True
    if ours:
        _driver_pop()


class CaptureGate:
    """Keeps a CUDA graph capture and every other thread's GPU work apart.

    ONNX Runtime captures its CUDA graph (`cuda_graph: true`) in cudaStreamCaptureModeGlobal: while any stream of
    the process is capturing, a copy, synchronisation or allocation on another thread fails -- that thread's call
    (a part fail-safes with `stage_error`) and the capture (the reload is refused). Per-part GPU work (the
    preprocess and infer stages) holds `work()`, shared; a capture holds `capture()`, exclusive, for its few
    milliseconds (the model's warm-up runs after the first, which already ran with the pipeline). A capture
    waiting stops new work from starting, so the pipeline pauses for it rather than starving it.

    One per process, like the capture mode it guards (`CAPTURES`). Not reentrant: a thread holding `work()` must
    not enter `work()` or `capture()` again (each entry point takes it once)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._working = 0
        self._capturing = False
        self._waiting = 0

    @contextlib.contextmanager
    def work(self) -> Iterator[None]:
        with self._cond:
            while self._capturing or self._waiting:
                self._cond.wait()
            self._working += 1
        try:
            yield
        finally:
            with self._cond:
                self._working -= 1
                if not self._working:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._capturing or self._working:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._capturing = True
        try:
            yield
        finally:
            with self._cond:
                self._capturing = False
                self._cond.notify_all()


CAPTURES = CaptureGate()
