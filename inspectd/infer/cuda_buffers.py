"""pycuda memory and streams for TensorRT execution contexts.

Page-locked host and device buffers are allocated once per execution context at the largest shape its
optimisation profile allows, so tensor addresses are set once and the hot path only copies and launches.
Each context owns one CUDA stream; copies are async on it and two events time the whole round trip.
N contexts (one per camera) run concurrently on one engine, each from its own thread.
pycuda is imported lazily: the planning parts here are plain numpy and run anywhere.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from math import prod
from typing import Generic, TypeVar

import numpy as np

from inspectd.cuda_context import release_primary
from inspectd.errors import BackendUnavailable
from inspectd.types import ModelInput

T = TypeVar("T")


@dataclass(frozen=True)
class TensorSlot:
    """One engine I/O tensor and the largest shape it can take: what its buffers are sized for."""

    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return prod(self.max_shape)

    @property
    def nbytes(self) -> int:
        return self.elements * np.dtype(self.dtype).itemsize


def plan_io(slots: Sequence[TensorSlot]) -> list[TensorSlot]:
    """Check a buffer plan: every dimension known and positive (a -1 left means a data-dependent shape,
    which would need an output allocator), names unique, at least one input and one output."""
    names = [s.name for s in slots]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tensor names in {names}")
    for s in slots:
        if not s.max_shape or any(d <= 0 for d in s.max_shape):
            raise ValueError(f"tensor {s.name!r} has no fixed maximum shape ({list(s.max_shape)}): "
                             f"data-dependent shapes are not supported")
    if not any(s.is_input for s in slots) or all(s.is_input for s in slots):
        raise ValueError("an engine needs at least one input and one output")
    return list(slots)


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise BackendUnavailable(f"pycuda is not installed ({e}); install the [tensorrt] extra") from None
    return cuda


class CudaDevice:
    """A GPU's primary context, the one the CUDA runtime (and so TensorRT) uses; made current per use,
    because a CUDA context is current per thread and the pipeline calls from its own threads."""

    def __init__(self, index: int = 0) -> None:
        cuda = import_pycuda()
        self.cuda = cuda
        cuda.init()
        if index >= cuda.Device.count():
            raise BackendUnavailable(f"CUDA device {index} not present ({cuda.Device.count()} device(s))")
        self.device = cuda.Device(index)
        self.context = self.device.retain_primary_context()
        major, minor = self.device.compute_capability()
        self.name = self.device.name()
        self.compute_capability = f"{major}.{minor}"
        self.total_memory = self.device.total_memory()

    def __enter__(self) -> CudaDevice:
        self.context.push()
        return self

    def __exit__(self, *exc) -> None:
        self.cuda.Context.pop()

    def close(self) -> None:
        release_primary(self.cuda, self.context)  # our retain; pycuda's detach() alone leaves it pushed


class HostDeviceBuffer:
    """A page-locked host array and a device allocation of the same size (async copies need pinned memory)."""

    def __init__(self, cuda, slot: TensorSlot) -> None:
        self.slot = slot
        self.host = cuda.pagelocked_empty(slot.elements, slot.dtype)
        self.device = cuda.mem_alloc(max(slot.nbytes, 1))

    @property
    def ptr(self) -> int:
        return int(self.device)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        n = prod(shape)
        if n > self.slot.elements:
            raise ValueError(f"tensor {self.slot.name!r}: shape {list(shape)} exceeds the buffer's "
                             f"{list(self.slot.max_shape)}")
        return self.host[:n].reshape(shape)

    def free(self) -> None:
        self.device.free()


class StreamSlot:
    """What one execution context needs: its stream, start/end events and one buffer pair per tensor."""

    def __init__(self, cuda, plan: Sequence[TensorSlot], stream=None) -> None:
        self.cuda = cuda
        self.stream = stream if stream is not None else cuda.Stream()
        self.start, self.end = cuda.Event(), cuda.Event()
        self.buffers = {s.name: HostDeviceBuffer(cuda, s) for s in plan_io(plan)}
        self.last_ms = 0.0

    @property
    def handle(self) -> int:
        return self.stream.handle

    def addresses(self) -> dict[str, int]:
        return {name: b.ptr for name, b in self.buffers.items()}

    def upload(self, name: str, array: np.ndarray) -> None:
        buf = self.buffers[name]
        view = buf.view(array.shape)
        np.copyto(view, array, casting="same_kind")
        self.cuda.memcpy_htod_async(buf.device, view, self.stream)

    def download(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        buf = self.buffers[name]
        view = buf.view(shape)
        self.cuda.memcpy_dtoh_async(view, buf.device, self.stream)
        return view

    def run(self, inputs: Mapping[str, ModelInput], execute: Callable[[int], None],
            output_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """H2D, execute on this stream, D2H, wait; returns copies the caller may keep (the pinned
        buffers are reused by the next call)."""
        self.start.record(self.stream)
        for name, array in inputs.items():
            if isinstance(array, np.ndarray):
                self.upload(name, array)
            else:  # a DeviceTensor (GPU preprocessing): its kernel writes straight into the input buffer
                array.enqueue_into(self.addresses()[name], self.stream)
        execute(self.handle)
        views = {name: self.download(name, shape) for name, shape in output_shapes.items()}
        self.end.record(self.stream)
        self.end.synchronize()
        self.last_ms = self.end.time_since(self.start)
        return {name: v.copy() for name, v in views.items()}

    def free(self) -> None:
        for b in self.buffers.values():
            b.free()
        self.buffers = {}


class SlotPool(Generic[T]):
    """N interchangeable execution slots shared by the calling threads; a caller waits for a free one."""

    def __init__(self, slots: Sequence[T]) -> None:
        if not slots:
            raise ValueError("a pool needs at least one slot")
        self.slots = list(slots)
        self._free: queue.Queue[T] = queue.Queue()
        for s in self.slots:
            self._free.put(s)
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak_in_use = 0

    @contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[T]:
        try:
            slot = self._free.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no free execution context within {timeout} s") from None
        with self._lock:
            self.in_use += 1
            self.peak_in_use = max(self.peak_in_use, self.in_use)
        try:
            yield slot
        finally:
            with self._lock:
                self.in_use -= 1
            self._free.put(slot)


class DeviceUploader:
    """Synchronous host -> device copy into one reused buffer; what a calibrator hands TensorRT."""

    def __init__(self, cuda, slot: TensorSlot) -> None:
        self.cuda, self.buffer = cuda, HostDeviceBuffer(cuda, slot)

    def __call__(self, array: np.ndarray) -> int:
        view = self.buffer.view(array.shape)
        np.copyto(view, array, casting="same_kind")
        self.cuda.memcpy_htod(self.buffer.device, view)
        return self.buffer.ptr
