"""The GenICam source into GPU preprocessing, on a real CUDA device with the simulated GenTL producer (TLSimu):
each frame is copied once out of the GenTL buffer into the source's frame pool, GpuPreprocessor pins the pool
(`host_buffers()`) and DMAs every frame from it in place: zero staging copies, the same tensors as the staged
path, and the CPU path's within the GPU preprocessing tolerance. Then a product switch with larger frames grows
the pool; pinned again, new frames skip staging too, while a frame still held in the old block is staged (the
old block is let go, no longer page-locked by anyone).

Skipped (with the reason) without pycuda and a CUDA device, without harvesters/genicam, or without TLSimu
(fetched into .cache/genicam/ by tests/genicam/provision.py, which needs network). On the GPU machine (none):
`bash tests/gpu/device_ort.sh tests` with .whl-gen/ carried (harvesters + genicam wheels, producers/TLSimu.cti;
its header says what goes in it).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from inspectd.config.schema import InputSpec, Preprocess
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame
from tests.genicam import provision
from tests.gpu.test_gpu_preprocess import REASON, allowed


def _camera_reason() -> str | None:
    """Checked without provision's downloads: the GPU machine has no network (device_ort.sh installs .whl-gen)."""
    site = provision.CACHE / "site"
    if site.is_dir() and str(site) not in sys.path:
        sys.path.append(str(site))
    try:
        import harvesters.core  # noqa: F401
    except Exception as exc:
        return f"harvesters not importable ({exc}): install the [genicam] extra or .whl-gen"
    if not (provision.CACHE / "producers" / "TLSimu.cti").is_file():
        return "TLSimu.cti not in .cache/genicam/producers (tests/genicam/provision.py fetches it; or .whl-gen)"
    return None


CAMERA = _camera_reason() if REASON is None else None
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"needs CUDA: {REASON}"),
              pytest.mark.skipif(CAMERA is not None, reason=f"needs the simulated camera: {CAMERA}")]

if REASON is None:
    from inspectd.preprocess.gpu import _PINS, GpuPreprocessor


def _shot(s) -> Frame:
    s.fire()
    f = s.grab(2.0)
    assert f is not None
    return f


def _tensor(pre, frame: Frame) -> np.ndarray:
    return np.array(pre(frame), copy=True)  # host ring array or DeviceInput (device delivery): a copy to keep


@pytest.mark.parametrize("deliver", ["host", "device"])
def test_genicam_frames_go_to_the_gpu_from_the_pinned_frame_pool(deliver: str) -> None:
    cti = provision.tlsimu()
    from inspectd.camera.genicam import GenICamConfig, GenICamSource

    def source(cti, **kw) -> GenICamSource:
        s = GenICamSource(GenICamConfig(type="genicam", producers=[cti], use_env_path=False,
                                        serial="SN_InterfaceA_0", **kw))
        s.open()
        return s

    pp = Preprocess(resize="stretch", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    spec = InputSpec(width=224, height=224, channels=3)
    cpu = CpuPreprocessor(pp, spec, ring=1)
    s = source(cti, trigger="software", frame_pool=6, features={"Width": 640, "Height": 480})
    pinned = GpuPreprocessor(pp, spec, ring=4, deliver=deliver)
    other = GpuPreprocessor(pp, spec, ring=4, deliver=deliver)  # a second product's preprocessor, same pool
    staged = GpuPreprocessor(pp, spec, ring=4, deliver=deliver)  # never pinned: the staging copy path
    to_close = [pinned, other, staged]
    try:
        (block,) = s.host_buffers()
        pinned.pin_host_buffers(s.host_buffers())
        pinned.pin_host_buffers(s.host_buffers())  # as the daemon does at each switch: unchanged, nothing to do
        other.pin_host_buffers(s.host_buffers())
        key = (block.ctypes.data, block.nbytes)
        assert _PINS._users[key][0] == 2

        def compare(frames: list[Frame]) -> None:
            for f in frames:
                a, b = _tensor(pinned, f), _tensor(staged, f)
                np.testing.assert_array_equal(a, b)  # DMA from the pool == staging copy, bit for bit
                ref = cpu(f)[0].astype(np.float64)
                plan = pinned.kernel_for(f).plan
                assert np.all(np.abs(a[0].astype(np.float64) - ref) <= allowed(plan, ref, "float32"))

        frames = []
        for _ in range(12):
            f = _shot(s)
            assert np.shares_memory(f.image, block)
            compare([f])
            frames = [*frames[-3:], f]  # parts still referenced downstream, as the archive would
        assert pinned.staging_copies == 0 and staged.staging_copies == 12
        assert s.stats.pool_full == s.stats.pool_misfit == 0

        to_close.remove(other)
        other.close()  # one user gone: still page-locked for the other
        assert _PINS._users[key][0] == 1
        compare([_shot(s)])
        assert pinned.staging_copies == 0

        held = frames[-1]  # a frame in the old block, still referenced
        before = _tensor(pinned, held)
        s.apply_features({"Width": 1024, "Height": 768})  # a product switch with larger frames: the pool grows
        (grown,) = s.host_buffers()
        assert grown.ctypes.data != block.ctypes.data
        pinned.pin_host_buffers(s.host_buffers())  # what the daemon does after apply_features
        assert key not in _PINS._users  # the old block is no longer page-locked by anyone
        new = [_shot(s) for _ in range(4)]
        assert all(np.shares_memory(f.image, grown) and f.image.shape == (768, 1024) for f in new)
        n = staged.staging_copies
        compare(new)
        assert pinned.staging_copies == 0 and staged.staging_copies == n + 4
        np.testing.assert_array_equal(_tensor(pinned, held), before)  # old block, let go: staged, same tensor
        assert pinned.staging_copies == 1
    finally:
        s.close()
        for pre in to_close:
            pre.close()
    assert key not in _PINS._users and (grown.ctypes.data, grown.nbytes) not in _PINS._users  # released at close
