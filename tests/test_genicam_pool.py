"""The GenICam source's frame pool against the real simulated producer (TLSimu): frames copied out of the GenTL
buffer into long-lived slots the source announces through host_buffers(), slots recycled, a held frame never
changed, fallbacks counted, the pool grown by a recipe with larger frames, images identical to fresh copies.

TLSimu's mono test pattern: pixel (y, x) of its k-th frame is (x + y + k) mod 256.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from inspectd.camera.genicam import GenICamSource
from inspectd.config.schema import InputSpec, Preprocess
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame
from tests.genicam import provision
from tests.test_genicam_source import MONO_SN, pattern, source
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def tlsimu() -> Path:
    provision.harvesters_importable()
    return provision.tlsimu()


def shot(s: GenICamSource) -> Frame:
    s.fire()
    f = s.grab(2.0)
    assert f is not None
    return f


def check(f: Frame) -> None:
    h, w = f.image.shape
    np.testing.assert_array_equal(f.image, pattern(h, w, int(f.image[0, 0])))


def test_frames_land_in_the_pool_and_slots_recycle(tlsimu: Path) -> None:
    s = source(tlsimu, trigger="software", frame_pool=4, features={"Width": 64, "Height": 48})
    try:
        (block,) = s.host_buffers()  # sized from the node map before the first frame (warm-up pins it)
        assert block.nbytes >= 4 * 64 * 48 and not block.flags.writeable
        addresses = set()
        for _ in range(40):  # each frame dropped before the next: 4 slots are plenty
            f = shot(s)
            assert np.shares_memory(f.image, block) and not f.image.flags.writeable
            check(f)
            addresses.add(f.image.ctypes.data)
            del f
        assert len(addresses) == 4
        assert (s.stats.frames, s.stats.pool_full, s.stats.pool_misfit) == (40, 0, 0)
    finally:
        s.close()


def test_held_frames_keep_their_slots_and_the_overflow_is_a_counted_fresh_copy(tlsimu: Path) -> None:
    s = source(tlsimu, trigger="software", frame_pool=3, features={"Width": 64, "Height": 48})
    try:
        (block,) = s.host_buffers()
        # what stays referenced downstream: a whole frame (archive queue), a slice of one (an ROI), a
        # view of a view (the console's thumbnail)
        a, b, c = shot(s), shot(s), shot(s)
        roi = b.image[8:40, 4:60]
        thumb = c.image[::2, ::2][1:]
        kept = [(a.image, a.image.copy()), (roi, roi.copy()), (thumb, thumb.copy())]
        del b, c
        gc.collect()
        extra = [shot(s) for _ in range(5)]  # no slot free: fresh memory, counted, same pixels
        for f in extra:
            assert not np.shares_memory(f.image, block) and not f.image.flags.writeable
            check(f)
        assert s.stats.pool_full == 5 and s.stats.pool_misfit == 0
        for view, before in kept:  # no frame taken since changed a held image
            np.testing.assert_array_equal(view, before)
        del a, kept, roi, thumb, view  # (loop variables hold frames too)
        gc.collect()
        again = [shot(s) for _ in range(3)]  # every reference gone: all three slots are back
        assert all(np.shares_memory(f.image, block) for f in again)
        assert s.stats.pool_full == 5
    finally:
        s.close()


def test_a_recipe_with_larger_frames_grows_the_pool_between_parts(tlsimu: Path) -> None:
    s = source(tlsimu, trigger="software", frame_pool=2, features={"Width": 64, "Height": 48})
    try:
        (small_block,) = s.host_buffers()
        held = shot(s)
        before = held.image.copy()
        s.apply_features({"Width": 320, "Height": 240})  # a product switch: stream stopped, features written
        (block,) = s.host_buffers()
        assert block.ctypes.data != small_block.ctypes.data and block.nbytes >= 2 * 320 * 240
        for _ in range(6):
            f = shot(s)
            assert f.image.shape == (240, 320) and np.shares_memory(f.image, block)
            check(f)
            del f
        np.testing.assert_array_equal(held.image, before)  # its old block lives on while the frame does
        assert np.shares_memory(held.image, small_block)
        s.apply_features({"Width": 64, "Height": 48})  # back: the larger slots hold it, no re-allocation
        assert s.host_buffers()[0].ctypes.data == block.ctypes.data
        f = shot(s)
        assert f.image.shape == (48, 64) and np.shares_memory(f.image, block)
        check(f)
        assert s.stats.pool_full == s.stats.pool_misfit == 0
    finally:
        s.close()


def test_pixel_format_relabelled_by_the_producer_still_fits(tlsimu: Path) -> None:
    """The fault proxy relabels TLSimu's Mono8 buffers as Mono12 at half the width (same bytes): the frame's
    geometry is not what the node map says, but it fits a slot and arrives exactly as a fresh copy would."""
    shim, ctl = provision.fault_shim()
    control = provision.ShimControl(ctl)
    control.set(pixfmt=0x01100005, width_div=2)
    s = source(shim, serial=MONO_SN, trigger="software", frame_pool=2, features={"Width": 64, "Height": 32})
    try:
        (block,) = s.host_buffers()
        f = shot(s)
    finally:
        s.close()
        control.clear()
    assert f.pixel_format == "Mono12" and f.image.dtype == np.uint16 and f.image.shape == (32, 32)
    assert np.shares_memory(f.image, block)
    np.testing.assert_array_equal(f.image, pattern(32, 64, int(f.image[0, 0]) & 0xFF).view("<u2"))


def test_pool_frames_match_fresh_copies_through_preprocessing(tlsimu: Path) -> None:
    """Same producer, same frame numbers: frame_pool 0 (every frame a fresh copy, the old path, counted as
    misfits) and the pool give identical images and identical model inputs."""
    pp = CpuPreprocessor(Preprocess(resize="stretch"), InputSpec(width=32, height=24, channels=3), ring=1)
    results = {}
    for slots in (0, 8):
        s = source(tlsimu, trigger="software", frame_pool=slots, features={"Width": 64, "Height": 48})
        try:
            if slots == 0:
                assert s.host_buffers() == []
            frames = [shot(s) for _ in range(5)]
            stats = (s.stats.pool_full, s.stats.pool_misfit)
        finally:
            s.close()
        assert stats == ((0, 5) if slots == 0 else (0, 0))
        for f in frames:
            check(f)
        results[slots] = {int(f.image[0, 0]): (f.image.copy(), pp(f).copy()) for f in frames}
    common = results[0].keys() & results[8].keys()
    assert common  # TLSimu's frame counter restarts with each source: the same k shows up in both runs
    for k in common:
        np.testing.assert_array_equal(results[0][k][0], results[8][k][0])
        np.testing.assert_array_equal(results[0][k][1], results[8][k][1])


def test_pool_counters_are_exported(tlsimu: Path) -> None:
    from inspectd.metrics import camera_counters

    s = source(tlsimu, trigger="software", frame_pool=1, features={"Width": 64, "Height": 48})
    try:
        held = shot(s)
        shot(s)  # the only slot is held: a fresh copy
        assert held is not None
        got = {m.name: m.samples[0].value for m in camera_counters(s.stats)}
    finally:
        s.close()
    assert got["inspectd_camera_pool_full"] == 1 and got["inspectd_camera_pool_misfit"] == 0


def test_the_pool_outlives_a_cable_pull_and_reconnect() -> None:
    """Reconnecting re-creates the acquirer and the producer's buffers, not the pool: same block (GPU preprocessing
    keeps its pin), and a frame taken before the loss is untouched by the frames after it."""
    provision.harvesters_importable()
    shim, ctl = provision.fault_shim()
    control = provision.ShimControl(ctl)
    control.clear()
    s = source(shim, serial=MONO_SN, trigger="software", frame_pool=2, reconnect_min_s=0.1, reconnect_max_s=0.4,
               features={"Width": 64, "Height": 48})
    try:
        (block,) = s.host_buffers()
        held = shot(s)
        before = held.image.copy()
        control.set(provision.ShimControl.CABLE_PULLED)
        s.fire()
        assert s.grab(0.5) is None and not s.connected
        control.clear()
        assert s.wait_connected(10)
        assert s.stats.reconnects == 1 and s.host_buffers()[0].ctypes.data == block.ctypes.data
        for _ in range(4):
            f = shot(s)
            assert np.shares_memory(f.image, block) and not np.shares_memory(f.image, held.image)
            check(f)
            del f
        np.testing.assert_array_equal(held.image, before)
    finally:
        s.close()
        control.clear()


class PinRecorder:
    """Stands in for GpuPreprocessor's pinning, which needs CUDA: CPU preprocessing, each pin recorded."""

    def __init__(self, inner: CpuPreprocessor) -> None:
        self.inner, self.pinned = inner, []

    def __call__(self, frame: Frame):
        return self.inner(frame)

    def pin_host_buffers(self, buffers) -> None:
        self.pinned.append([b.ctypes.data for b in buffers])


def test_a_product_switch_hands_the_grown_pool_to_the_next_products_preprocessing(tmp_path: Path) -> None:
    """The daemon with viky free-running: disc-b's larger frames grow the pool at the switch, and the daemon pins
    the new block for disc-b's preprocessing before its first part (GPU preprocessing then DMAs from it)."""
    import threading

    import yaml

    from inspectd.config.load import load_config
    from inspectd.daemon import Daemon, Options
    from tests.conftest import write_station

    provision.harvesters_importable()
    camera = {"type": "genicam", "producers": [str(provision.viky())], "use_env_path": False, "serial": "0",
              "trigger": "free_run", "frame_pool": 8,
              "features": {"AcquisitionFrameRate": 20.0, "PixelFormat": "Mono8"}}
    path = write_station(tmp_path, {"camera": camera}, {"camera_features": {"Width": 448, "Height": 448}})
    recipe = yaml.safe_load((tmp_path / "products" / "disc-a.yaml").read_text())
    recipe.update(name="disc-b", plc_id=2, camera_features={"Width": 640, "Height": 480})
    (tmp_path / "products" / "disc-b.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    d = Daemon(load_config(path), Options(handle_signals=False))
    t = threading.Thread(target=d.run)
    t.start()
    try:
        wait_until(lambda: d.pipeline is not None and d.pipeline.stats.verdicts_total >= 2, 30, "2 verdicts")
        assert d.pipeline is not None and d.source is not None
        (small,) = d.source.host_buffers()
        rt = d.runtimes["disc-b"]
        recorder = rt.preprocess = PinRecorder(rt.preprocess)
        assert d.switch_by_plc_id(2)  # applied now, between parts, as on the PLC's LOAD_RECIPE
        (grown,) = d.source.host_buffers()
        assert grown.ctypes.data != small.ctypes.data and grown.nbytes >= 8 * 640 * 480
        assert recorder.pinned == [[grown.ctypes.data]]
        switched_at = d.pipeline.stats.verdicts_total
        wait_until(lambda: d.pipeline is not None and d.pipeline.stats.verdicts_total >= switched_at + 3, 30,
                   "disc-b's parts flowing from the grown pool")
        assert d.source.stats.pool_misfit == 0
    finally:
        d.request_stop()
        t.join(30)
