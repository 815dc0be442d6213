"""Releasing our retain of a CUDA device's primary context (pycuda) without leaving it on the thread's stack.

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

import ctypes
from typing import Any


def _libcuda() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")  # loaded already by pycuda or the CUDA runtime: only looked up


def driver_current() -> int:
    """The calling thread's current CUDA context as the driver sees it (0: none)."""
    ctx = ctypes.c_void_p()
    rc = _libcuda().cuCtxGetCurrent(ctypes.byref(ctx))
    if rc != 0:
        raise RuntimeError(f"cuCtxGetCurrent failed with CUDA driver error {rc}")
    return int(ctx.value or 0)


def _driver_pop() -> int:
    """Pop the calling thread's current context; its handle, 0 when the driver refused (nothing to pop)."""
    ctx = ctypes.c_void_p()
    rc = _libcuda().cuCtxPopCurrent_v2(ctypes.byref(ctx))
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
