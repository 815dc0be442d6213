"""GPU preprocessing (pycuda): one fused kernel per chain, written straight into the inference input.

Flow per part (discrete GPU, `staging="copy"`):
  preprocess thread: frame rows of the ROI -> page-locked staging slot -> async H2D on a copy stream into the
                     slot's device buffer; returns a `DeviceInput` (nothing launched yet).
  infer thread:      backend calls `DeviceInput.enqueue_into(input_device_ptr, stream)`: its stream waits for
                     that H2D, the kernel writes NCHW into the engine's input buffer, then the backend enqueues
                     the engine on the same stream.
The H2D of part n+1 (copy stream) thus overlaps inference of part n (engine stream), and the kernel is
launched by the thread that owns the engine input, so it can never overwrite an input that the engine has
not consumed yet (launching from the preprocess thread would race with the infer thread).

Interface with a backend (the TensorRT backend implements it; nothing else is needed):
  backend.accepts_device_input = True     -> we hand it DeviceInput objects instead of numpy arrays
  backend.cuda_device: int (optional)     -> CUDA device ordinal, default 0
  in backend.infer(x): if isinstance(x, DeviceInput): x.enqueue_into(self.input_device_ptr, self.stream)
                       (stream: a pycuda.driver.Stream, or None for the legacy default stream)
Both sides must use the device's *primary* context (what the CUDA runtime, TensorRT, CuPy and PyTorch use;
pycuda: `Device(n).retain_primary_context()`, not pycuda.autoinit): device pointers do not cross contexts.
A backend without device input (ONNX Runtime on the CPU) gets host arrays: the kernel writes a private device
buffer that is copied back into a page-locked ring (`deliver="host"`), so GPU preprocessing still works there.

Jetson (integrated GPU, one DRAM): `staging="mapped"` (default where the device reports INTEGRATED) makes the
staging slots page-locked *mapped* memory the kernel reads in place: no H2D copy. `register_host_buffer()`
maps a camera's own buffers (cuMemHostRegister), so frames that are views into them need no copy at all.
Both paths are exercised for correctness on a discrete GPU (tests/gpu); nothing here ran on a Jetson.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import structlog

from inspectd.config.schema import InputSpec, Preprocess, ProductConfig
from inspectd.cuda_context import CAPTURES, libcuda, release_primary
from inspectd.errors import BackendUnavailable
from inspectd.preprocess import gpu_kernels as gk
from inspectd.preprocess.plan import Plan, make_plan
from inspectd.types import Frame

try:  # pycuda is optional (the `tensorrt` extra); CPU-only machines run the OpenCV path
    import pycuda.driver as _cuda
    from pycuda.compiler import SourceModule

    _cuda_import_error: str | None = None
except Exception as exc:  # ImportError, or a pycuda built against a libcuda that is absent here
    _cuda = None
    SourceModule = None
    _cuda_import_error = f"{type(exc).__name__}: {exc}"

log = structlog.get_logger("inspectd.preprocess.gpu")

Staging = Literal["auto", "copy", "mapped"]
Deliver = Literal["host", "device"]

_HINT = "install the 'tensorrt' extra on a machine with a CUDA device, or set `preprocess: cpu` in the station file"


def require_cuda(device: int = 0) -> Any:
    """The pycuda Device, or BackendUnavailable saying why GPU preprocessing cannot run here."""
    if _cuda is None:
        raise BackendUnavailable(f"station asks for `preprocess: gpu` but pycuda cannot be imported "
                                 f"({_cuda_import_error}); {_HINT}")
    try:
        _cuda.init()
        count = _cuda.Device.count()
    except _cuda.Error as exc:
        raise BackendUnavailable(f"station asks for `preprocess: gpu` but CUDA did not initialise ({exc}): "
                                 f"no driver or no device; {_HINT}") from exc
    if device >= count:
        raise BackendUnavailable(f"station asks for `preprocess: gpu` on CUDA device {device} but "
                                 f"{count} device(s) are present; {_HINT}")
    return _cuda.Device(device)


_CU_MEMHOSTREGISTER_PORTABLE, _CU_MEMHOSTREGISTER_DEVICEMAP = 0x01, 0x02


def _driver_check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{what} failed with CUDA driver error {rc}")


_CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712


class _HostPins:
    """Page-locking of memory a source owns (cuMemHostRegister, PORTABLE | DEVICEMAP), counted per block.

    Registration belongs to the process, not to a preprocessor: every product's preprocessor (and those a reload
    builds) pins the same source block. The last one to let go unregisters it, never one that others still copy
    from. Hence one table per process, like the driver's own. A block registered outside inspectd
    (ALREADY_REGISTERED at first use) is used and never unregistered.

    The table holds the block itself while it is registered: freed while registered, its address range would stay
    registered in the driver, and every later copy from memory the process puts there fails (`invalid argument`:
    seen on the H200 when a bench run left its runtimes to the garbage collector, and ONNX Runtime's own
    initializer copies failed after). A preprocessor never closed then leaks its block, not the registration.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (address, nbytes) -> [users, 1 if we registered it, the block]
        self._users: dict[tuple[int, int], list[Any]] = {}

    def acquire(self, addr: int, nbytes: int, block: object) -> None:
        """Context current; `block` owns the memory at addr."""
        with self._lock:
            entry = self._users.get((addr, nbytes))
            if entry is None:
                flags = _CU_MEMHOSTREGISTER_PORTABLE | _CU_MEMHOSTREGISTER_DEVICEMAP
                rc = libcuda().cuMemHostRegister_v2(ctypes.c_void_p(addr), ctypes.c_size_t(nbytes),
                                                     ctypes.c_uint(flags))
                if rc != _CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED:
                    _driver_check(rc, "cuMemHostRegister")
                entry = self._users[(addr, nbytes)] = [0, int(rc == 0), block]
            entry[0] += 1

    def release(self, addr: int, nbytes: int) -> None:
        """Context current; the caller has no copy or kernel from the block in flight."""
        with self._lock:
            entry = self._users[(addr, nbytes)]
            entry[0] -= 1
            if entry[0] == 0:
                del self._users[(addr, nbytes)]
                if entry[1]:
                    _driver_check(libcuda().cuMemHostUnregister(ctypes.c_void_p(addr)), "cuMemHostUnregister")


_PINS = _HostPins()


def _driver_h2d_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    """cuMemcpyHtoDAsync from a raw host address (the frame may be read-only; pycuda wants a writable buffer)."""
    _driver_check(libcuda().cuMemcpyHtoDAsync_v2(ctypes.c_uint64(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                                  ctypes.c_void_p(stream.handle)), "cuMemcpyHtoDAsync")


def _driver_device_ptr(addr: int) -> int:
    """The device address of registered (DEVICEMAP) host memory at `addr`, in the current context."""
    dptr = ctypes.c_uint64()
    _driver_check(libcuda().cuMemHostGetDevicePointer_v2(ctypes.byref(dptr), ctypes.c_void_p(addr), ctypes.c_uint(0)),
                  "cuMemHostGetDevicePointer")
    return int(dptr.value)


class Kernel:
    """One compiled chain: plan, tap tables on the device, and the launch."""

    def __init__(self, plan: Plan, rows: int | None = None, variant: str | None = None,
                 pitch_bytes: int | None = None) -> None:
        self.plan = plan
        tx, ty = gk.resize_taps(plan)
        self.variant = variant or gk.pick_variant(plan, tx, ty, pitch_bytes)
        tx, ty = gk.taps_for(plan, self.variant, (tx, ty))
        self.rows = rows or gk.row_split(ty)
        self.source = gk.kernel_source(plan, tx, ty, self.rows, self.variant)
        self.module = SourceModule(self.source, no_extern_c=True, options=["-O3"])
        self.fn = self.module.get_function(gk.kernel_name(plan))
        self.fn.prepare("PiPPPPP")
        self._tables = [_cuda.to_device(np.ascontiguousarray(a)) for a in (tx.idx, tx.w, ty.idx, ty.w)]
        self._table_ptrs = [int(t) for t in self._tables]
        self.grid, self.block = gk.launch_shape(plan, self.rows, self.variant, tx, ty)
        self.out_dtype = np.dtype(np.float16 if plan.dtype == "float16" else np.float32)
        self.out_shape = (1, plan.channels, plan.out_h, plan.out_w)
        self.out_nbytes = int(np.prod(self.out_shape)) * self.out_dtype.itemsize

    def free(self) -> None:
        """The tap tables' device memory, now (the caller has the context current)."""
        for t in self._tables:
            t.free()
        self._tables = []

    def launch(self, src_ptr: int, pitch_elems: int, dst_ptr: int, stream: Any = None) -> None:
        """src_ptr: first ROI row of the frame (any column); writes the NCHW tensor at dst_ptr."""
        if self.variant == "vec16" and (src_ptr % 16 or pitch_elems % 16):
            raise ValueError("vec16 kernel needs 16-byte aligned rows (staging slots are; a registered camera "
                             "buffer may not be): construct GpuPreprocessor with variant='separable'")
        self.fn.prepared_async_call(self.grid, self.block, stream, src_ptr, np.int32(pitch_elems), dst_ptr,
                                    *self._table_ptrs)


@dataclass
class _Slot:
    host: np.ndarray  # page-locked staging (mapped in "mapped" mode)
    src_ptr: int  # what the kernel reads: the device copy, or the mapped host memory
    dev: Any  # DeviceAllocation in "copy" mode
    h2d_done: Any
    kernel_done: Any
    lock: threading.Lock
    generation: int = 0


class DeviceInput:
    """A staged frame whose kernel has not run yet; the consumer says where and on which stream."""

    def __init__(self, owner: GpuPreprocessor, kernel: Kernel, slot: _Slot | None, generation: int,
                 src_ptr: int, pitch: int, source: np.ndarray | None = None) -> None:
        self._owner, self.kernel, self._slot, self._gen = owner, kernel, slot, generation
        self._src_ptr, self._pitch = src_ptr, pitch
        self._source = source  # source memory the kernel or its H2D reads in place: kept until this is dropped
        self.shape, self.dtype, self.nbytes = kernel.out_shape, kernel.out_dtype, kernel.out_nbytes

    def enqueue_into(self, dst_ptr: int, stream: Any = None) -> None:
        """Launch the fused kernel on `stream`, writing `nbytes` at device pointer `dst_ptr` (e.g. the engine's
        input binding). Ordered after this frame's H2D; the slot is released once the kernel has run."""
        with self._owner.current(), (self._slot.lock if self._slot else contextlib.nullcontext()):
            if self._slot is not None:
                if self._slot.generation != self._gen:
                    raise RuntimeError("GPU preprocessing: staging slot reused before its kernel ran; "
                                       "more parts in flight than the ring holds (raise `ring`)")
                if stream is None:
                    self._slot.h2d_done.synchronize()
                else:
                    stream.wait_for_event(self._slot.h2d_done)
            self.kernel.launch(self._src_ptr, self._pitch, dst_ptr, stream)
            if self._slot is not None:
                self._slot.kernel_done.record(stream)

    def to_host(self) -> np.ndarray:
        """The tensor as a new host array (tests, calibration); not the production path."""
        return self._owner._run_to_host(self).copy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.to_host()
        return out if dtype is None else out.astype(dtype)


class GpuPreprocessor:
    """Frame -> model input on the GPU. `deliver="device"` returns DeviceInput for a backend that launches it
    into its own input buffer; `deliver="host"` returns a page-locked numpy array from a ring of `ring`."""

    def __init__(self, pp: Preprocess, spec: InputSpec, *, device: int = 0, ring: int = 8,
                 staging: Staging = "auto", deliver: Deliver = "host", variant: str | None = None) -> None:
        self.pp, self.spec, self.deliver, self.variant = pp, spec, deliver, variant
        self._dev = require_cuda(device)
        self._ctx = self._dev.retain_primary_context()
        integrated = bool(self._dev.get_attribute(_cuda.device_attribute.INTEGRATED))
        self.staging = ("mapped" if integrated else "copy") if staging == "auto" else staging
        self._ring_size = max(2, ring)
        # host delivery launches at once, so two slots double-buffer; device delivery holds a slot per part in flight
        self._n_slots = 2 if deliver == "host" else self._ring_size
        self._kernels: dict[tuple[int, int, str], Kernel] = {}
        self._slots: list[_Slot] = []
        self._slot_bytes = 0
        self._next_slot = 0
        # the pin table (_PINS) holds each block while it is registered: these are the blocks' spans only
        self._registered: list[tuple[int, int, int]] = []  # mapped: (host addr, nbytes, device ptr)
        self._pinned: list[tuple[int, int]] = []  # source memory H2D reads directly: (addr, nbytes)
        self._pin_lock = threading.Lock()  # a block is let go only between two frames' copies from pinned memory
        self.staging_copies = 0  # frames that went through the host staging copy (not in pinned source memory)
        self._lock = threading.Lock()  # __call__ may come from a preprocess thread and a golden check at once
        self._closed = False
        with self.current():
            self._copy_stream = _cuda.Stream()
            self._stream = _cuda.Stream()
            self._out_dev: Any = None
            self._out_ring: list[np.ndarray] = []
            self._next_out = 0

    # ------------------------------------------------------------------ context

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make the primary context current on this thread for the duration (threads do not inherit it)."""
        self._ctx.push()
        try:
            yield
        finally:
            _cuda.Context.pop()

    # ------------------------------------------------------------------ setup per geometry

    def kernel_for(self, frame: Frame) -> Kernel:
        h, w = frame.image.shape[:2]
        key = (w, h, frame.pixel_format)
        k = self._kernels.get(key)
        if k is None:  # compiled once per frame geometry (nvcc ~1 s; pycuda caches the cubin on disk)
            with self.current():
                plan = make_plan(self.pp, self.spec, w, h, frame.pixel_format)
                pitch = frame.image.strides[0] if frame.image.flags.c_contiguous else None
                k = self._kernels[key] = Kernel(plan, variant=self.variant, pitch_bytes=pitch)
        return k

    def _ensure_slots(self, nbytes: int) -> None:
        if nbytes <= self._slot_bytes:
            return
        self._slots = []  # old allocations are freed when their last DeviceInput goes
        mapped = self.staging == "mapped"
        for _ in range(self._n_slots):
            flags = _cuda.host_alloc_flags.DEVICEMAP if mapped else 0
            host = _cuda.pagelocked_empty(nbytes, np.uint8, mem_flags=flags)
            dev = None if mapped else _cuda.mem_alloc(nbytes)
            ptr = host.base.get_device_pointer() if dev is None else int(dev)
            self._slots.append(_Slot(host, ptr, dev, _cuda.Event(_cuda.event_flags.DISABLE_TIMING),
                                     _cuda.Event(_cuda.event_flags.DISABLE_TIMING), threading.Lock()))
        self._slot_bytes = nbytes

    # ------------------------------------------------------------------ zero copy

    def register_host_buffer(self, buf: np.ndarray) -> None:
        """Pin and map a camera-owned buffer (cuMemHostRegister, DEVICEMAP) so frames that are views into it
        are read by the kernel in place, without the staging copy. The caller must not refill the memory
        with a new frame before that frame's kernel has run. (Through the driver API directly: pycuda's
        register_host_memory fails on current numpy, 'Cannot set the NumPy array base more than once'.)"""
        if not buf.flags.c_contiguous:
            raise ValueError("register_host_buffer needs a C-contiguous buffer")
        key = (buf.ctypes.data, buf.nbytes)
        if any((addr, n) == key for addr, n, _ in self._registered):
            return
        with self.current():
            _PINS.acquire(*key, buf)
            dptr = _driver_device_ptr(key[0])
        self._registered.append((*key, dptr))

    def pin_host_buffers(self, buffers: Sequence[np.ndarray]) -> None:
        """A source's long-lived memory, as it is now: frames that are views into it skip the staging copy (on a
        discrete GPU the H2D reads them in place, page-locked here; on Jetson, "mapped", the kernel does).

        Call again when the source's memory changed (the GenICam frame pool grows at a product switch): blocks no
        longer announced are let go (unpinned by the last preprocessor using them, then freed with their last
        frame); frames still in them just take the staging copy. Mapped registrations are kept until close:
        a staged frame's kernel may still read one in place."""
        wanted = {(b.ctypes.data, b.nbytes): b for b in buffers if b.flags.c_contiguous and b.nbytes}
        if self.staging == "mapped":
            for buf in wanted.values():
                self.register_host_buffer(buf)
            return
        with self._pin_lock, self.current():  # stage() has no copy from a pinned block in flight outside this lock
            for span in list(self._pinned):
                if wanted.pop(span, None) is None:
                    self._copy_stream.synchronize()  # no H2D still reading the block (stage() does not wait)
                    _PINS.release(*span)
                    self._pinned.remove(span)
            for (addr, n), buf in wanted.items():
                try:
                    _PINS.acquire(addr, n, buf)
                except RuntimeError as e:  # only slower: its frames take the staging copy
                    log.warning("host_buffer_not_pinned", mb=round(n / 2**20, 1), error=str(e))
                    continue
                self._pinned.append((addr, n))

    def _pinned_slab(self, addr: int, nbytes: int) -> bool:
        return any(base <= addr and addr + nbytes <= base + size for base, size in self._pinned)

    def _mapped_ptr(self, addr: int, nbytes: int) -> int | None:
        for base, size, dptr in self._registered:
            if base <= addr and addr + nbytes <= base + size:
                return dptr + (addr - base)
        return None

    # ------------------------------------------------------------------ per frame

    def stage(self, frame: Frame) -> DeviceInput:
        """Put the ROI rows of `frame` where the kernel reads them (async H2D on the copy stream)."""
        kernel = self.kernel_for(frame)
        _, y, _, h = kernel.plan.roi
        slab = frame.image[y:y + h]  # whole rows: one contiguous copy; the kernel offsets the ROI columns
        shape = frame.image.shape
        pitch = shape[1] * (shape[2] if len(shape) > 2 else 1)
        # the address once (ndarray.ctypes costs ~2 us), only for memory that may be pinned or mapped
        addr = slab.ctypes.data if (self._pinned or self._registered) and slab.flags.c_contiguous else None
        if addr is not None and self._registered:
            direct = self._mapped_ptr(addr, slab.nbytes)
            if direct is not None:
                return DeviceInput(self, kernel, None, 0, direct, pitch, source=slab)
        with self.current():  # one push per frame: a context push/pop pair is a few us
            with self._lock:
                self._ensure_slots(slab.nbytes)
                slot = self._slots[self._next_slot]
                self._next_slot = (self._next_slot + 1) % len(self._slots)
            return self._stage_into(slot, kernel, slab, addr, pitch)

    def _stage_into(self, slot: _Slot, kernel: Kernel, slab: np.ndarray, addr: int | None,
                    pitch: int) -> DeviceInput:
        with slot.lock:
            slot.generation += 1
            if self.staging == "mapped":
                slot.kernel_done.synchronize()  # the last kernel reads this memory in place
            else:
                slot.h2d_done.synchronize()  # the last H2D from this page-locked buffer has finished
                self._copy_stream.wait_for_event(slot.kernel_done)  # ... and the last kernel left its device copy
            with self._pin_lock:
                if self.staging == "copy" and addr is not None and self._pinned_slab(addr, slab.nbytes):
                    _driver_h2d_async(int(slot.dev), addr, slab.nbytes, self._copy_stream)  # straight from the source
                    slot.h2d_done.record(self._copy_stream)
                    # Not waited for here: the DeviceInput holds the frame's rows, and a source refills memory only
                    # once no array refers to it (GenICam frame-pool leases; synthetic and replay never do), so
                    # the frame stays put until the kernel, which waits for this copy, has run. (A DeviceInput
                    # dropped unused -- its part failed before inference -- lets go earlier: only that copy, which
                    # nothing reads, may then see a refilled frame.) The preprocess thread goes on at once and the
                    # launch queues behind the copy (pin_host_buffers waits for copies in flight before it unpins).
                    return DeviceInput(self, kernel, slot, slot.generation, slot.src_ptr, pitch, source=slab)
            self.staging_copies += 1
            dst = slot.host[:slab.nbytes].view(slab.dtype).reshape(slab.shape)
            np.copyto(dst, slab)
            if self.staging == "copy":
                _cuda.memcpy_htod_async(slot.dev, slot.host[:slab.nbytes], self._copy_stream)
            slot.h2d_done.record(self._copy_stream)
            return DeviceInput(self, kernel, slot, slot.generation, slot.src_ptr, pitch)

    def __call__(self, frame: Frame) -> np.ndarray | DeviceInput:
        with CAPTURES.work():  # never while a reload captures a CUDA graph (its kernel: inside the backend's run)
            staged = self.stage(frame)
            if self.deliver == "device":
                return staged
            return self._run_to_host(staged)

    def _run_to_host(self, staged: DeviceInput) -> np.ndarray:
        k = staged.kernel
        with self._lock, self.current():
            if self._out_dev is None or self._out_ring[0].shape != k.out_shape or \
                    self._out_ring[0].dtype != k.out_dtype:
                self._out_dev = _cuda.mem_alloc(k.out_nbytes)
                self._out_ring = [_cuda.pagelocked_empty(k.out_shape, k.out_dtype) for _ in range(self._ring_size)]
            out = self._out_ring[self._next_out]
            self._next_out = (self._next_out + 1) % len(self._out_ring)
            staged.enqueue_into(int(self._out_dev), self._stream)
            _cuda.memcpy_dtoh_async(out, self._out_dev, self._stream)
            self._stream.synchronize()
        return out

    def close(self) -> None:
        """Free everything on the device and every page-locked buffer now, then release the primary context.

        Explicitly, not by dropping references: a DeviceInput still referred to (a stage's last part of a retired
        runtime, until its next part) keeps its slot and kernel alive past this call, and pycuda frees an
        allocation whose context object it has detached by skipping the free silently (it takes the context for
        destroyed; the primary context lives on in ONNX Runtime and the other runtimes), so that device and
        page-locked memory would stay allocated until the process exits, a little more at every reload.

        Idempotent: ProductRuntime.close closes its preprocessor, which a test may have closed already (a second
        push of the released primary context fails once nothing else in the process retains it)."""
        if self._closed:
            return
        self._closed = True
        with self.current():
            self._copy_stream.synchronize()
            self._stream.synchronize()
            for addr, n, _ in self._registered:
                _PINS.release(addr, n)
            self._registered.clear()
            with self._pin_lock:
                for addr, n in self._pinned:
                    _PINS.release(addr, n)  # unpinned when no other product's preprocessor uses it
                self._pinned.clear()
            for slot in self._slots:
                slot.host.base.free()  # type: ignore[union-attr]  # pycuda PagelockedHostAllocation
                if slot.dev is not None:
                    slot.dev.free()
            for kernel in self._kernels.values():
                kernel.free()
            for out in self._out_ring:
                out.base.free()  # type: ignore[union-attr]  # pycuda PagelockedHostAllocation
            if self._out_dev is not None:
                self._out_dev.free()
            # Streams, events and modules have no free() in pycuda: the last reference goes here, with the
            # context current, so cuStreamDestroy / cuEventDestroy / cuModuleUnload run now (a stale DeviceInput
            # may keep a module and two events, a few KB, until it goes).
            self._slots, self._kernels, self._out_ring, self._out_dev = [], {}, [], None
            self._copy_stream = self._stream = None
        release_primary(_cuda, self._ctx)  # pycuda's detach() alone would leave it on this thread's stack


def make_gpu_preprocessor(product: ProductConfig, backend: Any, ring: int) -> GpuPreprocessor:
    """Called by pipeline.runtime for `preprocess: gpu`. Device input when the backend takes it (TensorRT),
    host arrays otherwise (ONNX Runtime); BackendUnavailable without pycuda or a CUDA device."""
    if product.model.input.dtype == "uint8":
        from inspectd.errors import ConfigError

        raise ConfigError([f"product {product.name!r}: model.input.dtype: uint8 runs on the CPU preprocessing only "
                           f"(station preprocess: cpu)"])
    deliver: Deliver = "device" if getattr(backend, "accepts_device_input", False) else "host"
    return GpuPreprocessor(product.preprocess, product.model.input, device=int(getattr(backend, "cuda_device", 0)),
                           ring=ring, deliver=deliver)
