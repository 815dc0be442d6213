"""The frame pool's lifetime rules, on its own: a slot is lent while anything refers to a frame in it (any view,
slice or buffer of it), and comes back when the last reference goes. Against a real camera: test_genicam_pool.py."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from inspectd.camera.frame_pool import ALIGN, FramePool


def image(k: int, shape: tuple[int, ...] = (48, 64), dtype: type = np.uint8) -> np.ndarray:
    return ((np.arange(int(np.prod(shape))) + k) % 251).astype(dtype).reshape(shape)


def test_frames_are_read_only_copies_in_the_announced_block() -> None:
    pool = FramePool(3)
    assert pool.host_buffers() == [] and pool.take(image(0)) is None  # nothing reserved yet
    assert pool.reserve(48 * 64) and not pool.reserve(48 * 64) and not pool.reserve(100)  # fits: no re-allocation
    (block,) = pool.host_buffers()
    assert block.ctypes.data % ALIGN == 0 and block.nbytes == 3 * ALIGN and not block.flags.writeable
    src = image(7)
    f = pool.take(src)
    assert f is not None and f.shape == src.shape and f.dtype == src.dtype
    np.testing.assert_array_equal(f, src)
    assert np.shares_memory(f, block) and not np.shares_memory(f, src)
    assert f.ctypes.data % ALIGN == 0  # each slot starts on a page
    assert not f.flags.writeable
    with pytest.raises(ValueError):
        f.setflags(write=True)  # nobody downstream can turn it writable and change a judged image
    with pytest.raises(ValueError):
        f[0, 0] = 1
    rgb16 = image(3, (8, 10, 3), np.uint16)
    g = pool.take(rgb16)
    assert g is not None and g.dtype == np.uint16 and g.shape == (8, 10, 3)
    np.testing.assert_array_equal(g, rgb16)


def test_a_slot_is_held_by_any_view_and_returned_with_the_last() -> None:
    pool = FramePool(2)
    pool.reserve(48 * 64)
    f = pool.take(image(1))
    assert f is not None and pool.free == 1
    # views of views: numpy's .base of these is not the frame itself; each must still hold the slot
    roi = f[10:30, 5:60]
    strided = roi[::2, ::3]
    col = strided.T[1]
    mv = memoryview(f[3])
    del f, roi, strided
    gc.collect()
    assert pool.free == 1
    snapshot = col.copy()
    g = pool.take(image(2))  # takes the other slot, never the held one
    assert g is not None and pool.free == 0
    assert pool.take(image(3)) is None  # full: the caller copies into fresh memory
    np.testing.assert_array_equal(col, snapshot)  # the held image never changed
    assert mv[0] == image(1)[3, 0]
    del col
    assert pool.free == 0  # the memoryview still holds it
    del mv
    assert pool.free == 1
    del g
    assert pool.free == 2


def test_slots_come_back_from_any_thread_and_recycle() -> None:
    pool = FramePool(4)
    pool.reserve(48 * 64)
    held = [pool.take(image(k)) for k in range(4)]
    assert pool.free == 0 and all(h is not None for h in held)
    t = threading.Thread(target=held.clear)  # the archive writer or the console drops frames on its own thread
    t.start()
    t.join(5)
    assert pool.free == 4
    addresses = set()
    for k in range(100):  # taken and dropped one at a time: always a slot, never a fresh copy
        f = pool.take(image(k))
        assert f is not None
        np.testing.assert_array_equal(f, image(k))
        addresses.add(f.ctypes.data)
        del f
    assert len(addresses) == 4 and pool.free == 4


def test_growing_keeps_frames_of_the_old_block_intact() -> None:
    pool = FramePool(2)
    pool.reserve(48 * 64)
    (old_block,) = pool.host_buffers()
    old = pool.take(image(5))
    assert old is not None
    big = image(9, (480, 640))
    assert pool.take(big) is None  # larger than a slot: fresh copy (counted by the source as pool_misfit)
    assert pool.reserve(big.nbytes)  # a recipe with larger frames: a new block
    (block,) = pool.host_buffers()
    assert block.ctypes.data != old_block.ctypes.data and pool.free == 2
    frames = [pool.take(big), pool.take(image(6, (480, 640)))]
    assert all(f is not None and np.shares_memory(f, block) for f in frames)
    np.testing.assert_array_equal(old, image(5))  # still the old block's memory, untouched
    assert np.shares_memory(old, old_block)
    del old  # its slot goes back to the old block's free list, not into the new pool
    assert pool.free == 0
    frames.clear()
    assert pool.free == 2
    assert not pool.reserve(48 * 64)  # back to the small recipe: the larger slots hold it, same block
    small = pool.take(image(1))
    assert small is not None and np.shares_memory(small, block)


def test_no_pool() -> None:
    pool = FramePool(0)
    assert not pool.reserve(4096) and pool.host_buffers() == [] and pool.take(image(0)) is None
