"""Long-lived frame memory for a source that copies each image out of its driver's buffer (GenICam).

The one copy out of the GenTL buffer (the buffer goes back to the producer at once, so the stream never starves)
lands in a slot of this pool: one page-aligned block of equal slots, allocated between parts and announced
through `Source.host_buffers()`, so GPU preprocessing page-locks it once and DMAs frames straight from it
instead of copying each one again into a staging buffer.

A slot is never reused while anything references a frame in it (the pipeline, the archive writer, the console,
a slice of the image): a reused slot would change an image after its verdict. Each frame's array is made from a
small lease exposing `__array_interface__` into its slot. numpy makes that lease the `.base` of the array and of
every view or slice of it (views of views collapse to the first base that is not a view), so the lease lives as
long as any of them, and its slot goes back to the free list when the lease is collected.
"""

from __future__ import annotations

import mmap
from collections import deque

import numpy as np

ALIGN = mmap.PAGESIZE  # slots start on page boundaries: DMA-friendly, rows stay 16-byte aligned for the vec16 kernel


class _Lease:
    """One frame's hold on a slot; numpy's base object of the frame and of every view of it."""

    __slots__ = ("__array_interface__", "_block", "_free", "_index")

    def __init__(self, block: np.ndarray, free: deque[int], index: int, address: int, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self._block, self._free, self._index = block, free, index  # the block outlives its last lease
        self.__array_interface__ = {"version": 3, "shape": shape, "typestr": dtype.str,
                                    "data": (address, True)}  # read-only: frames are shared downstream

    def __del__(self) -> None:
        # deque.append is atomic: no lock, so a collection on any thread (even one inside take()) is safe
        self._free.append(self._index)


class FramePool:
    """`slots` frames of up to `slot_bytes` each, in one block. Not thread-safe for take/reserve (the source calls
    them under its lock); slots come back from any thread."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._block = np.empty(0, np.uint8)
        self._free: deque[int] = deque()
        self.slot_bytes = 0

    def reserve(self, nbytes: int) -> bool:
        """Make every slot hold frames of `nbytes`; call between parts (nothing taken meanwhile). Re-allocates only
        when the current slots are too small, so switching back and forth between two recipes costs one
        allocation (and one page-locking), not one per switch; the pool is then as large as the largest frame
        asked for since start. True when the block changed (`host_buffers()` is new: pin it again). Frames in
        the old block keep it alive until they are gone; their slots never return to the new one."""
        if self.slots == 0 or nbytes <= self.slot_bytes:
            return False
        slot = -(-nbytes // ALIGN) * ALIGN
        # its own anonymous mapping, not the heap: page-aligned, and given back to the system when the last frame
        # of a replaced block goes (a heap block this size stays resident in the allocator's arena)
        self._block = np.frombuffer(mmap.mmap(-1, slot * self.slots), np.uint8)
        self._free = deque(range(self.slots))
        self.slot_bytes = slot
        return True

    def take(self, src: np.ndarray) -> np.ndarray | None:
        """A read-only copy of `src` in a free slot; None when every slot is held or `src` is larger than a slot
        (the caller then copies into fresh memory: correct, only not in page-locked memory)."""
        if src.nbytes > self.slot_bytes:
            return None
        try:
            i = self._free.popleft()
        except IndexError:
            return None
        offset = i * self.slot_bytes
        np.copyto(self._block[offset:offset + src.nbytes].view(src.dtype).reshape(src.shape), src)
        lease = _Lease(self._block, self._free, i, self._block.ctypes.data + offset, src.shape, src.dtype)
        return np.asarray(lease)

    @property
    def free(self) -> int:
        """Slots not lent out now (tests, metrics)."""
        return len(self._free)

    def host_buffers(self) -> list[np.ndarray]:
        """The block every pooled frame is a view of (read-only to the caller); empty before the first reserve."""
        if not self._block.size:
            return []
        view = self._block.view()
        view.setflags(write=False)
        return [view]
