"""harvesters plumbing: producer files, finding a camera by serial or user id, tearing an acquirer down.

Imports harvesters at module level: only import this once a GenICam source is in use
(harvesters and genicam are the optional `[genicam]` extra).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from genicam.gentl import ACQ_STOP_FLAGS_LIST
from harvesters.core import Harvester, ImageAcquirer

from inspectd.errors import CameraError
from inspectd.log import adopt_loggers
from inspectd.types import Frame

adopt_loggers("harvesters")  # its loggers print plain text past our handler otherwise

log = structlog.get_logger("inspectd.camera.genicam")

ENV_PATH = "GENICAM_GENTL64_PATH"


class _NoChunkData:
    """Stands in for the GenApi chunk adapter harvesters gives every acquirer.

    Measured with harvesters 1.4.3 / genicam 1.6.0: each ChunkAdapterGeneric leaks about 210 KB of native
    memory that no destroy() returns, so a camera that reconnects leaks with every reconnect. inspectd reads
    no chunk data, so acquirers get this no-op instead (tests/test_genicam_source.py, 50 cycles, checks RSS).
    """

    def attach_buffer(self, *args: object, **kw: object) -> None: ...

    def update_buffer(self, *args: object, **kw: object) -> None: ...

    def detach_buffer(self) -> None: ...


ImageAcquirer._get_chunk_adapter = staticmethod(lambda **kw: _NoChunkData())  # see _NoChunkData


def producer_files(configured: Sequence[Path], use_env: bool = True) -> list[Path]:
    """Configured .cti files first, then every .cti in the GENICAM_GENTL64_PATH folders; no duplicates."""
    found: list[Path] = []
    for p in configured:
        if not p.is_file():
            raise CameraError(f"GenTL producer not found: {p}")
        found.append(p.resolve())
    if use_env:
        for folder in filter(None, os.environ.get(ENV_PATH, "").split(os.pathsep)):
            d = Path(folder)
            if d.is_file() and d.suffix == ".cti":
                found.append(d.resolve())
            elif d.is_dir():
                found.extend(sorted(p.resolve() for p in d.glob("*.cti")))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise CameraError(f"no GenTL producer: set camera.producers or {ENV_PATH}")
    return unique


def info_field(info: Any, attr: str) -> str:
    """A device-info field, '' where the producer does not provide it (it raises NotAvailableException)."""
    try:
        value = getattr(info, attr)
    except Exception:
        return ""
    return "" if value is None else str(value)


def describe(info: Any) -> dict[str, str]:
    return {
        "vendor": info_field(info, "vendor"),
        "model": info_field(info, "model"),
        "serial": info_field(info, "serial_number"),
        "user_id": info_field(info, "user_defined_name"),
        "interface": info_field(getattr(info, "parent", None), "display_name") or info_field(info, "tl_type"),
        "tl_type": info_field(info, "tl_type"),
        "id": info_field(info, "id_"),
    }


def new_harvester(producers: Sequence[Path]) -> Harvester:
    h = Harvester()
    adopt_loggers("harvesters")  # Harvester() makes loggers of its own the same way
    try:
        for p in producers:
            h.add_file(str(p), check_existence=True, check_validity=True)
        h.update()
    except Exception:
        h.reset()
        raise
    return h


def pick(h: Harvester, serial: str | None, user_id: str | None) -> Any:
    """The one device with this serial or user id. Never by index: enumeration order changes with cabling."""
    key, want = ("serial", serial) if serial is not None else ("user_id", user_id)
    matches = [d for d in h.device_info_list if describe(d)[key] == want]
    if not matches:
        seen = ", ".join(f"{describe(d)['serial']}/{describe(d)['user_id'] or '-'}" for d in h.device_info_list)
        raise CameraError(f"no camera with {key} {want!r} (serial/user id seen: {seen or 'none'})")
    if len(matches) > 1:
        raise CameraError(f"{len(matches)} cameras have {key} {want!r}; give each a unique one or use serial")
    return matches[0]


def open_acquirer(h: Harvester, serial: str | None, user_id: str | None,
                  num_buffers: int) -> tuple[ImageAcquirer, dict[str, str]]:
    info = pick(h, serial, user_id)
    on_main = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if on_main else None
    try:
        ia = h.create(info)
    finally:
        if on_main:  # harvesters installs its own SIGINT handler (holding the acquirer): the daemon owns signals
            signal.signal(signal.SIGINT, sigint)
    try:
        ia.num_buffers = max(num_buffers, int(getattr(ia, "min_num_buffers", 1)))  # producer's floor (TLSimu: 5)
    except Exception:
        ia.destroy()
        raise
    return ia, describe(info)


def stop_streams(ia: ImageAcquirer) -> None:
    """Stop acquisition even when the device is gone.

    harvesters 1.4.3 only catches GenApi errors around AcquisitionStop; a GenTL IoException from a vanished
    device escapes ia.stop() before the data streams are stopped, so stop them by hand then.
    """
    try:
        ia.stop()
        return
    except Exception as e:
        log.warning("camera_stop_failed", error=f"{type(e).__name__}: {e}")
    for ds in list(getattr(ia, "_data_streams", [])):  # private in harvesters 1.4.3; see above
        try:
            ds.stop_acquisition(ACQ_STOP_FLAGS_LIST.ACQ_STOP_FLAGS_KILL)
        except Exception as e:
            log.warning("camera_stream_stop_failed", error=f"{type(e).__name__}: {e}")


def teardown(ia: ImageAcquirer | None, h: Harvester | None) -> None:
    """Release everything, whatever state the device is in; never raises."""
    if ia is not None:
        stop_streams(ia)
        try:
            # Not ia.destroy(): harvesters 1.4.3 registers weakref.finalize(ia, ia.destroy), and only calling
            # that finalizer (what __exit__ does) unregisters it; destroy() alone leaves the acquirer, its
            # node map and buffers referenced until exit, about 200 KB per reconnect.
            ia.__exit__(None, None, None)
        except Exception as e:
            log.warning("camera_destroy_failed", error=f"{type(e).__name__}: {e}")
    if h is not None:
        try:
            h.reset()
        except Exception as e:
            log.warning("harvester_reset_failed", error=f"{type(e).__name__}: {e}")


def buffer_to_frame(buf: Any, serial: str, copy: Callable[[np.ndarray], np.ndarray]) -> tuple[Frame, int, int]:
    """Copy the image out of a GenTL buffer (the one copy, made by `copy`: into the source's frame pool), so the
    buffer can go back to the stream at once. `copy` returns a read-only array that owns, or leases, its memory.

    Returns the frame, the camera's frame id and its timestamp in ns (0 where the producer gives none).
    """
    comp = buf.payload.components[0]
    h, w, n = int(comp.height), int(comp.width), int(comp.num_components_per_pixel)
    fmt = str(comp.data_format)
    shape = (h, w) if n == 1 else (h, w, n)
    image = copy(comp.data[: h * w * n].reshape(shape))
    frame_id = int(buf.frame_id)
    try:
        ts = int(buf.timestamp_ns)
    except Exception:  # producer without ns timestamps (raw ticks have no known unit): none
        ts = 0
    frame = Frame(image=image, pixel_format=fmt, t_grab=time.monotonic(), frame_id=frame_id,
                  meta={"serial": serial, "camera_ts_ns": ts})
    return frame, frame_id, ts
