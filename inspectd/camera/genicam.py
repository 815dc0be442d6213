"""GenICam camera (GigE Vision, USB3 Vision) through harvesters and a vendor GenTL producer (.cti).

One source = one camera, found by serial number or user id. A supervisor thread owns
recovery: when `grab` or `fire` sees the camera go (an I/O error, a failed register
probe after a timeout, or N timeouts in a row) the source turns `connected` False,
grabs answer None at once (the acquire stage gives those triggers a `camera_lost`
verdict), and the supervisor tears the acquirer down and reconnects with backoff
through a fresh Harvester: a Harvester that saw its device vanish can stay wedged
(BusyException / ResourceInUseException).

What fire/grab do and how a timeout is judged depend on `camera.trigger`: one strategy per mode in
genicam_trigger.py (free_run, software, hardware with its frame pump); this class owns connection and recovery.

harvesters is imported only when a source is built (`[genicam]` extra).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import structlog

from inspectd.camera.config import GenICamConfig
from inspectd.camera.frame_pool import FramePool
from inspectd.camera.genicam_features import FeatureError, FeatureResult, FeatureValue, apply_features, problems
from inspectd.camera.genicam_stats import AcquisitionStats, FrameAccounting
from inspectd.camera.genicam_trigger import MODES, trigger_features
from inspectd.errors import CameraError, ExitCode
from inspectd.pixels import COLOUR, PIXEL_FORMATS, pixel_bits
from inspectd.types import Frame

log = structlog.get_logger("inspectd.camera.genicam")

DRAIN_S = 1e-4  # try_fetch treats timeout 0 as "wait forever": drain with a tiny positive one


class GenICamUnavailable(CameraError):
    """harvesters/genicam missing: an installation fault that a restart will not fix."""

    exit_code = ExitCode.CONFIG


class GenICamSource:
    """Source protocol over one GenICam camera; thread-safe (acquire thread grabs, daemon switches products)."""

    name = "genicam"

    def __init__(self, cfg: GenICamConfig) -> None:
        try:
            from inspectd.camera import genicam_device
        except ImportError as e:
            raise GenICamUnavailable(f"GenICam support is not installed ({e}): pip install 'inspectd[genicam]'") from e
        self._dev = genicam_device
        self.cfg = cfg
        self.stats = AcquisitionStats()
        self._accounting = FrameAccounting(self.stats)
        self._pool = FramePool(cfg.pool_slots)  # where each frame is copied out of the GenTL buffer
        self._lock = threading.RLock()  # guards every call into harvesters
        self._h: Any = None
        self._ia: Any = None
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._recipe: dict[str, FeatureValue] = {}
        self._timeouts_in_row = 0
        self._last_frame_t = 0.0  # free-run stall detection; reset at each (re)connect
        self.last_features: list[FeatureResult] = []
        self.device: dict[str, str] = {}
        self._mode = MODES[cfg.trigger](self)  # what fire/grab do, and how timeouts are judged

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect now and start the recovery supervisor. CameraError if the camera cannot be had (unless
        wait_for_camera); FeatureError (a config fault) if the station's features cannot be set."""
        self._closing.clear()
        try:
            self._connect(initial=True)
        except FeatureError:
            raise
        except Exception as e:
            ident = f"serial {self.cfg.serial!r}" if self.cfg.serial is not None else f"user id {self.cfg.user_id!r}"
            err = e if isinstance(e, CameraError) else CameraError(f"camera {ident}: {type(e).__name__}: {e}")
            if not self.cfg.wait_for_camera:
                raise err from e
            log.error("camera_unavailable_at_start", error=str(err), action="connecting in the background")
            self._lost.set()
        self._supervisor = threading.Thread(target=self._supervise, name="genicam-supervisor", daemon=True)
        self._supervisor.start()
        self._mode.start()

    def close(self) -> None:
        self._closing.set()
        self._lost.set()  # wake the supervisor
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
        self._supervisor = None
        self._mode.stop()
        with self._lock:
            self._connected.clear()
            self._dev.teardown(self._ia, self._h)
            self._ia = self._h = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def host_buffers(self) -> list[np.ndarray]:
        """The frame pool's block: every frame that found a free slot is a view of it. It changes only when a
        product switch (or reconnect) asks for larger frames than the pool holds: pin it again after
        apply_features. The producer's own GenTL buffers are not announced: frames are copied out of them at once
        so they go back to the stream (a frame held downstream would otherwise starve it)."""
        return self._pool.host_buffers()

    def sample(self) -> Frame | None:
        """A black frame of the camera's current Width/Height/PixelFormat (warm-up needs the geometry only). Fresh
        memory, not a pool slot: the daemon keeps it for later warm-ups."""
        if not self._connected.is_set():
            return None
        with self._lock:
            if self._ia is None:
                return None
            geometry = _geometry(self._ia.remote_device.node_map)
        if geometry is None:
            return None
        shape, dtype, fmt = geometry
        return Frame(image=np.zeros(shape, dtype), pixel_format=fmt, t_grab=time.monotonic())

    def wait_connected(self, timeout: float) -> bool:
        """For tools and tests: block until connected or `timeout` passes."""
        return self._connected.wait(timeout)

    # --- per part --------------------------------------------------------------------------------------------

    def fire(self) -> None:
        """Software trigger: ask for one frame now (free-run and hardware modes ignore it)."""
        self._mode.fire()

    def grab(self, timeout: float) -> Frame | None:
        if not self.connected:
            self._mode.grab_while_lost(timeout)
            return None
        return self._mode.grab(timeout)

    def _delivered(self, frame: Frame) -> Frame:
        self._timeouts_in_row = 0
        self._last_frame_t = frame.t_grab
        self.stats.frames += 1
        return frame

    def _fetch(self, timeout: float) -> Frame | None:
        """One frame out of the stream (caller holds the lock), or None: timeout, or the camera declared lost."""
        try:
            buf = self._ia.try_fetch(timeout=max(timeout, DRAIN_S))
        except Exception as e:
            self._declare_lost(f"fetch failed: {type(e).__name__}: {e}")
            return None
        if buf is None:
            return None
        try:
            frame, frame_id, ts = self._dev.buffer_to_frame(buf, self.device.get("serial", ""), self._copy_out)
        finally:
            buf.queue()  # a buffer not handed back starves the stream after num_buffers frames
        self._accounting.seen(frame_id, ts)
        return frame

    def _copy_out(self, image: np.ndarray) -> np.ndarray:
        """The one copy of a frame out of the GenTL buffer: into a frame-pool slot, else (counted) fresh memory."""
        out = self._pool.take(image)
        if out is None:
            if image.nbytes > self._pool.slot_bytes:
                self.stats.pool_misfit += 1
            else:
                self.stats.pool_full += 1
            out = image.copy()
            out.setflags(write=False)
        return out

    def apply_features(self, features: Mapping[str, FeatureValue]) -> None:
        """Set a product's camera features (stream stopped meanwhile: Width, PixelFormat... are locked while it
        runs). Kept and re-applied after a reconnect. Raises FeatureError naming each feature that failed."""
        with self._lock:
            self._recipe = dict(features)
            if not self.connected:
                log.warning("camera_features_deferred", reason="camera not connected; applied on reconnect")
                return
            try:
                self._dev.stop_streams(self._ia)
                results = self._configure(self._ia)
                self._size_pool(self._ia)
                self._ia.start()
                self._accounting.restart()
                self._mode.discard_waiting()  # taken with the old product's settings
            except Exception as e:
                self._declare_lost(f"feature switch failed: {type(e).__name__}: {e}")
                return
        bad = problems(results)
        if bad:
            raise FeatureError(bad)

    # --- internals -------------------------------------------------------------------------------------------

    def _configure(self, ia: Any) -> list[FeatureResult]:
        nm = ia.remote_device.node_map
        trig = trigger_features(self.cfg, nm)
        wanted: dict[str, FeatureValue] = {**self.cfg.features, **self._recipe}
        clashes = [f"{k}: recipe wants {wanted[k]!r} but camera.trigger={self.cfg.trigger} needs {v!r}"
                   for k, v in trig.items() if k in ("TriggerMode", "TriggerSource") and k in wanted and wanted[k] != v]
        results = apply_features(nm, {**wanted, **trig})
        results += [FeatureResult(c.split(":")[0], "", None, c) for c in clashes]
        self.last_features = results
        bad = problems(results)
        self.stats.feature_errors += len(bad)
        for p in bad:
            log.error("camera_feature_problem", problem=p)
        return results

    def _size_pool(self, ia: Any) -> None:
        """Stream stopped: make the frame pool's slots hold the frames the camera is now set to deliver."""
        # From the image geometry, not PayloadSize: producers may report far more (viky: 10 MB for 448 x 448 Mono8)
        try:
            geometry = _geometry(ia.remote_device.node_map)
        except Exception as e:  # frames then go to fresh memory, counted as pool_misfit
            log.warning("camera_frame_pool_not_sized", error=f"{type(e).__name__}: {e}")
            return
        if geometry is None:  # a format inspectd does not take (refused at configuration)
            return
        shape, dtype, _ = geometry
        if self._pool.reserve(int(np.prod(shape)) * np.dtype(dtype).itemsize):
            log.info("camera_frame_pool", slots=self._pool.slots, slot_bytes=self._pool.slot_bytes,
                     mb=round(self._pool.slots * self._pool.slot_bytes / 2**20, 1))

    def _connect(self, initial: bool) -> None:
        # Under the lock throughout, so a product switch during a reconnect is either seen by _configure or
        # waits for it. grab/fire/pump check `connected` before taking the lock: a reconnect never blocks them.
        dev, cfg = self._dev, self.cfg
        h = ia = None
        with self._lock:
            try:
                h = dev.new_harvester(dev.producer_files(cfg.producers, cfg.use_env_path))
                ia, device = dev.open_acquirer(h, cfg.serial, cfg.user_id, cfg.num_buffers)
                results = self._configure(ia)
                bad = problems(results)
                if bad and initial:
                    raise FeatureError(bad)  # wrong station config: let the daemon refuse to start
                self._size_pool(ia)
                ia.start()
            except Exception:
                dev.teardown(ia, h)
                raise
            self._h, self._ia, self.device = h, ia, device
            self._accounting.restart()
            self._mode.discard_waiting()  # frames from before the loss belong to triggers already answered
            self._timeouts_in_row = 0
            self._last_frame_t = time.monotonic()
            self._lost.clear()
            if not initial:
                self.stats.reconnects += 1
            self._connected.set()
        log.info("camera_connected", serial=device.get("serial"), model=device.get("model"),
                 trigger=cfg.trigger, reconnect=not initial)

    def _timed_out(self) -> None:
        self.stats.timeouts += 1
        self._timeouts_in_row += 1
        why = self._mode.loss_after_timeout()
        if why is not None:
            self._declare_lost(why)
            return
        try:  # a register read tells a slow or untriggered camera from a gone one
            self._probe()
        except Exception as e:
            self._declare_lost(f"grab timeout and register probe failed: {type(e).__name__}: {e}")

    def _probe(self) -> None:
        nm = self._ia.remote_device.node_map
        if not hasattr(nm, "PayloadSize"):  # mandatory for streaming devices; without it, no probe
            return
        node = nm.PayloadSize
        node.node.invalidate_node()  # read the register, not GenApi's cache
        _ = node.value

    def _drain(self) -> None:
        while (buf := self._ia.try_fetch(timeout=DRAIN_S)) is not None:
            try:
                self._accounting.seen(int(buf.frame_id), 0)
            finally:
                buf.queue()
            self.stats.extra += 1

    def _declare_lost(self, why: str) -> None:
        if not self._connected.is_set():
            return
        self._connected.clear()
        self.stats.losses += 1
        log.error("camera_lost", serial=self.device.get("serial"), reason=why)
        self._lost.set()
        self._mode.wake()  # a hardware-trigger grab waiting for a frame answers now

    def _supervise(self) -> None:
        while not self._closing.is_set():
            self._lost.wait()
            if self._closing.is_set():
                return
            with self._lock:
                ia, h, self._ia, self._h = self._ia, self._h, None, None
            self._dev.teardown(ia, h)
            backoff = self.cfg.reconnect_min_s
            while not self._closing.is_set():
                try:
                    self._connect(initial=False)
                    break
                except Exception as e:
                    self.stats.reconnect_failures += 1
                    log.warning("camera_reconnect_failed", error=f"{type(e).__name__}: {e}", retry_s=backoff)
                    self._closing.wait(backoff)
                    backoff = min(backoff * 2, self.cfg.reconnect_max_s)



def _geometry(node_map: Any) -> tuple[tuple[int, ...], type[np.unsignedinteger], str] | None:
    """Shape, dtype and pixel format of the frames the camera is set to deliver; None for a format inspectd
    does not take."""
    w, h, fmt = int(node_map.Width.value), int(node_map.Height.value), str(node_map.PixelFormat.value)
    if fmt not in PIXEL_FORMATS:
        return None
    return ((h, w, 3) if fmt in COLOUR else (h, w)), (np.uint16 if pixel_bits(fmt) > 8 else np.uint8), fmt
