"""What a reload's close gives back on the GPU, checked against the driver itself.

- Releasing a retained primary context (inspectd.cuda_context.release_primary) leaves the thread's driver context
  stack as it found it; pycuda's bare detach() leaves one entry per call (the evidence for the helper).
- A GpuPreprocessor's close frees its device memory now, even while a DeviceInput still refers to its slot.

Skipped (with the reason) without pycuda and a CUDA device. On the GPU machine: bash tests/gpu/device_ort.sh tests
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from inspectd.config.schema import InputSpec, Preprocess
from inspectd.types import Frame
from tests.gpu.test_gpu_preprocess import REASON

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"needs CUDA: {REASON}")]

if REASON is None:
    import pycuda.driver as cuda

    from inspectd.cuda_context import driver_current, release_primary
    from inspectd.preprocess.gpu import GpuPreprocessor


def _stack() -> list[int]:
    """This thread's driver context stack, top first; restored before returning."""
    lib = ctypes.CDLL("libcuda.so.1")
    popped = []
    while driver_current():
        ctx = ctypes.c_void_p()
        assert lib.cuCtxPopCurrent_v2(ctypes.byref(ctx)) == 0
        popped.append(int(ctx.value or 0))
    for ctx_handle in reversed(popped):
        assert lib.cuCtxPushCurrent_v2(ctypes.c_void_p(ctx_handle)) == 0
    return popped


def _free_mib() -> float:
    free, _ = cuda.mem_get_info()
    return free / 2**20


def test_release_primary_leaves_the_thread_stack_as_found() -> None:
    cuda.init()
    dev = cuda.Device(0)
    keep = dev.retain_primary_context()  # the primary context stays alive throughout, as ONNX Runtime keeps it
    try:
        before = _stack()
        for _ in range(20):
            ctx = dev.retain_primary_context()
            ctx.push()
            buf = cuda.mem_alloc(1 << 20)
            buf.free()
            cuda.Context.pop()
            release_primary(cuda, ctx)
        assert _stack() == before
        bare = dev.retain_primary_context()
        bare.detach()  # pycuda alone: pushed for the release, never popped
        after = _stack()
        assert len(after) == len(before) + 1, (before, after)
        ctypes.CDLL("libcuda.so.1").cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        assert _stack() == before
    finally:
        release_primary(cuda, keep)


def _pre(size: int = 448, **kw) -> GpuPreprocessor:
    pp = Preprocess(roi={"x": 0, "y": 0, "width": size, "height": size}, resize="area", color="rgb",
                    scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return GpuPreprocessor(pp, InputSpec(name="input", width=224, height=224, channels=3), staging="copy", **kw)


def _frame(image: np.ndarray) -> Frame:
    return Frame(image=image, pixel_format="Mono8", t_grab=0.0)


def test_close_frees_device_memory_a_stale_device_input_still_refers_to() -> None:
    probe = _pre()  # its context block is where free memory is read (no context of ours nested around a close)

    def free_mib() -> float:
        with probe.current():
            return cuda.mem_get_info()[0] / 2**20

    try:
        before = free_mib()
        big = _pre(4096, ring=32, deliver="device")
        kept = big(_frame(np.zeros((4096, 4096), np.uint8)))  # a DeviceInput a stage still holds
        used = before - free_mib()
        assert used > 256, used  # 32 staging slots of 16 MiB on the device
        big.close()
        assert before - free_mib() < 64, "freed at close, though `kept` still refers to a slot"
        del kept
    finally:
        probe.close()


def test_a_preprocessor_never_closed_keeps_its_pinned_block_alive_not_a_stale_registration() -> None:
    """A block freed while page-locked would leave its address range registered in the driver, and every later copy
    from memory put there fails ('invalid argument'; seen on the H200 when a bench left its runtimes to the garbage
    collector). The registration holds the block: dropping every other reference frees nothing."""
    import gc
    import weakref

    from inspectd.preprocess.gpu import _PINS

    block = np.zeros((4, 448, 448), np.uint8)
    key, alive = (block.ctypes.data, block.nbytes), weakref.ref(block)
    pre = _pre()
    pre.pin_host_buffers([block])
    frame = _frame(block[1])
    np.testing.assert_array_equal(np.asarray(pre(frame)), np.asarray(pre(_frame(block[1].copy()))))
    del block, frame, pre  # never closed
    gc.collect()
    assert alive() is not None and key in _PINS._users  # still registered, so still allocated
    probe = _pre()
    try:  # copies from fresh memory still work
        np.asarray(probe(_frame(np.full((448, 448), 7, np.uint8))))
    finally:
        probe.close()
