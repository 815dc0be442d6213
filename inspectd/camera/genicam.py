"""GenICam camera (GigE Vision, USB3 Vision) through harvesters and a vendor GenTL producer (.cti).

One source = one camera, found by serial number or user id. A supervisor thread owns
recovery: when `grab` or `fire` sees the camera go (an I/O error, a failed register
probe after a timeout, or N timeouts in a row) the source turns `connected` False,
grabs answer None at once (the acquire stage gives those triggers a `camera_lost`
verdict), and the supervisor tears the acquirer down and reconnects with backoff
through a fresh Harvester: a Harvester that saw its device vanish can stay wedged
(BusyException / ResourceInUseException).

harvesters is imported only when a source is built (`[genicam]` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field, model_validator

from inspectd.camera.genicam_features import FeatureError, FeatureResult, FeatureValue, apply_features, problems
from inspectd.camera.genicam_stats import AcquisitionStats, FrameAccounting
from inspectd.config.base import Model
from inspectd.errors import CameraError
from inspectd.types import Frame

log = structlog.get_logger("inspectd.camera.genicam")

DRAIN_S = 1e-4  # try_fetch treats timeout 0 as "wait forever": drain with a tiny positive one


class GenICamConfig(Model):
    type: Literal["genicam"]
    producers: list[Path] = Field(default_factory=list, description="GenTL producer .cti files (vendor SDK); "
                                  "searched before the folders in GENICAM_GENTL64_PATH")
    use_env_path: bool = Field(True, description="also load the producers found in GENICAM_GENTL64_PATH")
    serial: str | None = Field(None, description="camera serial number (give this or user_id)")
    user_id: str | None = Field(None, description="camera user-defined name, DeviceUserID (give this or serial)")
    trigger: Literal["free_run", "software", "hardware"] = Field(
        "software", description="free_run: the camera streams; software: fire() executes TriggerSoftware; "
        "hardware: a line triggers the camera and frames are matched to parts in order")
    trigger_line: str = Field("Line1", description="TriggerSource for the hardware trigger")
    trigger_activation: str | None = Field("RisingEdge", description="TriggerActivation for the hardware "
                                           "trigger; null leaves the camera's setting")
    features: dict[str, FeatureValue] = Field(default_factory=dict, description="station-wide SFNC features "
                                              "set before each product's camera_features")
    num_buffers: int = Field(8, ge=2, le=256, description="GenTL buffers announced to the stream")
    lost_after_timeouts: int = Field(3, ge=1, le=1000, description="consecutive grab timeouts that declare "
                                     "the camera lost (a failed register probe declares it at once)")
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait between reconnection attempts")
    reconnect_max_s: float = Field(10.0, gt=0, description="longest wait between reconnection attempts")

    @model_validator(mode="after")
    def _one_identity(self) -> GenICamConfig:
        if (self.serial is None) == (self.user_id is None):
            raise ValueError("give exactly one of serial or user_id (cameras are never chosen by list index)")
        return self


def trigger_features(cfg: GenICamConfig, node_map: Any) -> dict[str, FeatureValue]:
    """The SFNC settings that make the camera's trigger match `cfg.trigger`."""
    out: dict[str, FeatureValue] = {}
    if hasattr(node_map, "TriggerSelector"):
        out["TriggerSelector"] = "FrameStart"
    if cfg.trigger == "free_run":
        if hasattr(node_map, "TriggerMode"):  # a camera without triggers free-runs anyway
            out["TriggerMode"] = "Off"
        return out
    out["TriggerSource"] = "Software" if cfg.trigger == "software" else cfg.trigger_line
    if cfg.trigger == "hardware" and cfg.trigger_activation is not None:
        out["TriggerActivation"] = cfg.trigger_activation
    out["TriggerMode"] = "On"
    return out


class GenICamSource:
    """Source protocol over one GenICam camera; thread-safe (acquire thread grabs, daemon switches products)."""

    name = "genicam"

    def __init__(self, cfg: GenICamConfig) -> None:
        try:
            from inspectd.camera import genicam_device
        except ImportError as e:
            raise CameraError(f"GenICam support is not installed ({e}): pip install 'inspectd[genicam]'") from e
        self._dev = genicam_device
        self.cfg = cfg
        self.stats = AcquisitionStats()
        self._accounting = FrameAccounting(self.stats)
        self._lock = threading.RLock()  # guards every call into harvesters
        self._h: Any = None
        self._ia: Any = None
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._recipe: dict[str, FeatureValue] = {}
        self._timeouts_in_row = 0
        self.last_features: list[FeatureResult] = []
        self.device: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect now (CameraError if the camera cannot be had) and start the recovery supervisor."""
        self._closing.clear()
        self._connect(initial=True)
        self._supervisor = threading.Thread(target=self._supervise, name="genicam-supervisor", daemon=True)
        self._supervisor.start()

    def close(self) -> None:
        self._closing.set()
        self._lost.set()  # wake the supervisor
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
            self._supervisor = None
        with self._lock:
            self._connected.clear()
            self._dev.teardown(self._ia, self._h)
            self._ia = self._h = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """For tools and tests: block until connected or `timeout` passes."""
        return self._connected.wait(timeout)

    # --- per part --------------------------------------------------------------------------------------------

    def fire(self) -> None:
        """Software trigger: TriggerSoftware.execute(). Frames already waiting were made before this trigger:
        they are discarded and counted as extra, so a late frame is never matched to this part."""
        if self.cfg.trigger != "software":
            return  # free-run streams; a hardware line fires the camera (grab drains instead)
        with self._lock:
            if not self.connected:
                return
            try:
                self._drain()
                self._ia.remote_device.node_map.TriggerSoftware.execute()
                self.stats.triggers += 1
            except Exception as e:
                self._declare_lost(f"trigger failed: {type(e).__name__}: {e}")

    def grab(self, timeout: float) -> Frame | None:
        if not self.connected:
            if self.cfg.trigger == "free_run":  # the acquire stage loops on grab: don't spin
                self._connected.wait(timeout)
            return None
        with self._lock:
            if not self.connected:
                return None
            try:
                if self.cfg.trigger == "hardware":
                    # grab follows the PLC's trigger: a frame already waiting came from an earlier line pulse
                    # with no part behind it. Dropping it costs at worst a no_frame fail-safe, never a frame
                    # matched to the wrong part.
                    self._drain()
                buf = self._ia.try_fetch(timeout=max(timeout, DRAIN_S))
            except Exception as e:
                self._declare_lost(f"fetch failed: {type(e).__name__}: {e}")
                return None
            if buf is None:
                self._timed_out()
                return None
            try:
                frame, frame_id, ts = self._dev.buffer_to_frame(buf, self.device.get("serial", ""))
            finally:
                buf.queue()  # a buffer not handed back starves the stream after num_buffers frames
            self._accounting.seen(frame_id, ts)
            self._timeouts_in_row = 0
            self.stats.frames += 1
            return frame

    def apply_features(self, features: Mapping[str, object]) -> None:
        """Set a product's camera features (stream stopped meanwhile: Width, PixelFormat... are locked while it
        runs). Kept and re-applied after a reconnect. Raises FeatureError naming each feature that failed."""
        with self._lock:
            self._recipe = dict(features)  # type: ignore[arg-type]
            if not self.connected:
                log.warning("camera_features_deferred", reason="camera not connected; applied on reconnect")
                return
            try:
                self._dev.stop_streams(self._ia)
                results = self._configure(self._ia)
                self._ia.start()
                self._accounting.restart()
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

    def _connect(self, initial: bool) -> None:
        dev, cfg = self._dev, self.cfg
        h = ia = None
        try:
            h = dev.new_harvester(dev.producer_files(cfg.producers, cfg.use_env_path))
            ia, device = dev.open_acquirer(h, cfg.serial, cfg.user_id, cfg.num_buffers)
            results = self._configure(ia)
            bad = problems(results)
            if bad and initial:
                raise FeatureError(bad)  # wrong station config: let the daemon refuse to start
            ia.start()
        except Exception:
            dev.teardown(ia, h)
            raise
        with self._lock:
            self._h, self._ia, self.device = h, ia, device
            self._accounting.restart()
            self._timeouts_in_row = 0
            self._lost.clear()
            if not initial:
                self.stats.reconnects += 1
            self._connected.set()
        log.info("camera_connected", serial=device.get("serial"), model=device.get("model"),
                 trigger=cfg.trigger, reconnect=not initial)

    def _timed_out(self) -> None:
        self.stats.timeouts += 1
        self._timeouts_in_row += 1
        if self._timeouts_in_row >= self.cfg.lost_after_timeouts:
            self._declare_lost(f"{self._timeouts_in_row} grab timeouts in a row")
            return
        try:  # a register read tells a slow or untriggered camera from a gone one
            self._probe()
        except Exception as e:
            self._declare_lost(f"grab timeout and register probe failed: {type(e).__name__}: {e}")

    def _probe(self) -> None:
        node = self._ia.remote_device.node_map.PayloadSize
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

