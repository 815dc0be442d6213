"""Reject archive: rejected and fail-safe parts (and a sample of passes) saved by their own thread.

Per part, under <path>/<product>/, all named <UTC time>_s<seq>_p<part id>_<verdict>:
- .png  the raw frame, lossless, as the camera delivered it (16-bit kept; Bayer kept as the mosaic)
- .jpg  for people: the ROI, the defect heatmap, verdict, reason and scores drawn on it
- .json the verdict (scores, stage times, model hash)
Names sort by time, so "oldest first" is name order. Quotas (whole and per product) delete the oldest
parts after each save. A full or read-only disk suspends archiving for `retry_s` with one log line and
counters; the inspection never waits for this thread (`submit` is a put_nowait on a bounded queue).

The archive shares its disk with the journal, which matters more: it never writes below a free-space floor
(`min_free_mb`), and once stopped there (or by a full disk) it resumes only when `resume_free_mb` is free again
(hysteresis), so freeing some space does not let it refill the disk at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from inspectd.config.schema import ArchiveConfig, Roi
from inspectd.preprocess.plan import BAYER, BAYER_TO_CV_RGB, pixel_max
from inspectd.types import Frame, Outcome, Part, Verdict

log = structlog.get_logger("inspectd.archive")

SUFFIXES = (".png", ".jpg", ".json")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Item:
    verdict: Verdict
    frame: Frame | None
    heatmap: np.ndarray | None
    roi: Roi | None


def stem_for(v: Verdict) -> str:
    t = time.gmtime(v.wall_time)
    ms = int((v.wall_time % 1) * 1000)
    return f"{time.strftime('%Y%m%dT%H%M%S', t)}.{ms:03d}Z_s{v.seq:08d}_p{v.part_id}_{v.outcome.value}"


def to_bgr8(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """Any supported camera format -> 8-bit BGR for display."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) * (255.0 / pixel_max(pixel_format))).clip(0, 255).astype(np.uint8)
    if pixel_format in BAYER:
        rgb = cv2.cvtColor(image, getattr(cv2, "COLOR_" + BAYER_TO_CV_RGB[pixel_format]))
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image[..., ::-1] if pixel_format == "RGB8" else image)


def raw_png(frame: Frame) -> bytes:
    image = frame.image
    if frame.pixel_format == "RGB8":  # PNG via OpenCV is BGR; keep the file's colours right
        image = np.ascontiguousarray(image[..., ::-1])
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"PNG encoding failed for {frame.pixel_format} {image.shape} {image.dtype}")
    return buf.tobytes()


def roi_box(roi: Roi | None, width: int, height: int) -> tuple[int, int, int, int]:
    if roi is None:
        return 0, 0, width, height
    x, y, w, h = roi.box(width, height)
    return x, y, min(w, width - x), min(h, height - y)  # drawn on the frame: clipped to it


def annotated_jpeg(item: Item, quality: int = 90) -> bytes:
    v, frame = item.verdict, item.frame
    assert frame is not None
    img = to_bgr8(frame.image, frame.pixel_format)
    img = np.ascontiguousarray(img)  # frames may be views; drawing needs our own buffer
    if img is frame.image:
        img = img.copy()
    height, width = img.shape[:2]
    x, y, w, h = roi_box(item.roi, width, height)
    if item.heatmap is not None and w > 0 and h > 0:
        # The heatmap covers the model input, which is the ROI (area/stretch resize; letterbox adds padding).
        p = cv2.resize(np.asarray(item.heatmap, np.float32).squeeze(), (w, h), interpolation=cv2.INTER_LINEAR)
        p = np.clip(p, 0.0, 1.0)
        colour = cv2.applyColorMap((p * 255).astype(np.uint8), cv2.COLORMAP_JET).astype(np.float32)
        alpha = (0.6 * p)[..., None]  # opaque where the model sees a defect, clear where it does not
        region = img[y:y + h, x:x + w].astype(np.float32)
        img[y:y + h, x:x + w] = (region * (1 - alpha) + colour * alpha).astype(np.uint8)
    bad = v.outcome is not Outcome.PASS
    ink = (0, 0, 255) if bad else (0, 200, 0)
    thick = max(2, width // 400)
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), ink, thick)
    if v.region is not None:  # anomaly recipes: the area that drove the score
        rx, ry, rw, rh = v.region
        cv2.rectangle(img, (rx, ry), (rx + rw - 1, ry + rh - 1), (255, 255, 255), max(1, thick // 2))
    scores = " ".join(f"{k}={s:.3f}" for k, s in sorted(v.scores.items()))
    lines = [f"{v.outcome.value.upper()} {v.reason}".strip(), f"{v.product} seq {v.seq} part {v.part_id}",
             scores or "no scores", f"{v.latency_ms:.1f} ms"]
    scale = max(0.4, width / 1000)
    font_thick = max(1, round(scale * 1.5))
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, font_thick)
    line_h = th + base + 8
    for i, text in enumerate(lines):
        org = (8, 4 + line_h * (i + 1) - base - 4)
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, font_thick)
        cv2.rectangle(img, (org[0] - 4, org[1] - th - 4), (org[0] + tw + 4, org[1] + base + 4), (0, 0, 0), -1)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, ink if i == 0 else (255, 255, 255), font_thick,
                    cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def verdict_json(v: Verdict) -> bytes:
    return json.dumps({"seq": v.seq, "part_id": v.part_id, "product": v.product, "verdict": v.outcome.value,
                       "reason": v.reason, "result_code": v.result_code, "plc_ok": v.plc_ok, "score": v.score,
                       "scores": dict(v.scores), "latency_ms": round(v.latency_ms, 3),
                       "stage_ms": {k: round(x, 3) for k, x in v.stage_ms.items()}, "wall_time": v.wall_time,
                       "truth": v.truth, "model_sha256": v.model_sha256,
                       "region": list(v.region) if v.region is not None else None}, indent=1).encode()


_STOP = object()
_WAKE = object()
_FAILURES = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only"}


class Archive:
    """A VerdictSink. `submit` never blocks; images are encoded and written by the archive thread."""

    def __init__(self, cfg: ArchiveConfig, retry_s: float = 30.0) -> None:
        self.cfg = cfg
        self.root = Path(cfg.path)
        self.retry_s = retry_s
        self.saved = 0
        self.deleted = 0  # parts removed by the quota
        self.dropped: Counter[str] = Counter()  # reason -> parts not archived
        self._pass_credit = 0.0
        self._suspended_until = 0.0
        self._suspend_reason = ""
        self.floor = cfg.min_free_mb * 1e6
        resume = cfg.resume_free_mb if cfg.resume_free_mb is not None else 1.25 * cfg.min_free_mb
        self.resume_at = max(resume * 1e6, self.floor)
        self._low_space = False  # below the floor (or disk full): waits for `resume_at` free bytes
        self._room_wanted = threading.Event()
        self._files: dict[str, deque[tuple[str, int]]] = {}  # product folder -> (stem, bytes), oldest first
        self._bytes: Counter[str] = Counter()
        self._q: queue.Queue = queue.Queue(maxsize=cfg.queue)
        self._thread = threading.Thread(target=self._run, name="archive", daemon=True)

    # -- hot path -------------------------------------------------------------------------------
    def wanted(self, v: Verdict) -> bool:
        if v.outcome is not Outcome.PASS:
            return True
        # Deterministic sampling: every 1/sample_pass-th pass, so the rate holds exactly over a shift.
        self._pass_credit += self.cfg.sample_pass
        if self._pass_credit >= 1.0:
            self._pass_credit -= 1.0
            return True
        return False

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        if not self.wanted(verdict):
            return
        # A reference, not a copy: a source's frame stays valid while referenced (GenICam: its frame-pool slot is
        # lent until the last reference goes, this one included), so the hot path pays nothing for the archive.
        frame = part.frame if part is not None else None
        findings = part.findings if part is not None else None
        runtime = part.runtime if part is not None else None
        item = Item(verdict, frame, findings.extra.get("heatmap") if findings is not None else None,
                    runtime.product.preprocess.roi if runtime is not None else None)
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.dropped["queue_full"] += 1

    @property
    def pending(self) -> int:
        return self._q.qsize()

    @property
    def total_bytes(self) -> int:
        return sum(self._bytes.values())

    @property
    def suspended(self) -> bool:
        return self._low_space or time.monotonic() < self._suspended_until

    def free_bytes(self) -> int:
        """Free space (for unprivileged writers) on the archive's filesystem; statvfs, microseconds."""
        p = self.root
        while not p.exists() and p != p.parent:
            p = p.parent
        st = os.statvfs(p)
        return st.f_bavail * st.f_frsize

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._index()
        except OSError as e:  # unusable folder: the worker retries later; inspection starts regardless
            self._fail(e, self.root)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (bounded by `timeout`), then stop."""
        if self._thread.is_alive():
            try:
                self._q.put(_STOP, timeout=timeout)
            except queue.Full:
                return
            self._thread.join(timeout)

    def _index(self) -> None:
        """Existing archive (from earlier runs) counts against the quota too."""
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            sizes: Counter[str] = Counter()
            for f in folder.iterdir():
                if f.suffix in SUFFIXES:
                    sizes[f.name[: -len(f.suffix)]] += f.stat().st_size
            self._files[folder.name] = deque(sorted(sizes.items()))
            self._bytes[folder.name] = sum(sizes.values())

    # -- worker ---------------------------------------------------------------------------------
    def give_room(self) -> None:
        """Any thread: the journal on this filesystem ran out of space, so the floor was too low for it. The
        archive thread doubles its floor (at least +4 MB), deletes its oldest parts until the resume level is
        free, and stays off until then (hysteresis)."""
        self._room_wanted.set()
        with contextlib.suppress(queue.Full):
            self._q.put_nowait(_WAKE)  # a full queue means the thread is busy and sees the flag soon anyway

    def _give_room(self) -> None:
        self._room_wanted.clear()
        self.floor = max(2 * self.floor, self.floor + 4e6)
        self.resume_at = max(self.resume_at, 1.25 * self.floor)
        before, deleted = self.free_bytes(), 0
        while self.free_bytes() < self.resume_at:
            candidates = [p for p, files in self._files.items() if files]
            if not candidates:
                break
            self._delete_oldest(min(candidates, key=lambda p: self._files[p][0][0]))
            deleted += 1
        self._low_space = True
        self._suspend_reason = "gave_room"
        log.warning("archive_gave_room", deleted=deleted, freed_mb=round((self.free_bytes() - before) / 1e6, 1),
                    min_free_mb=round(self.floor / 1e6, 1), resume_free_mb=round(self.resume_at / 1e6, 1))

    def _run(self) -> None:
        while (item := self._q.get()) is not _STOP:
            if self._room_wanted.is_set():
                self._give_room()
            if item is _WAKE:
                continue
            if time.monotonic() < self._suspended_until or (self._low_space and not self._space_back()):
                self.dropped["suspended"] += 1
                continue
            try:
                self._save(item)
            except Exception:  # a bad frame must not kill the archive thread
                self.dropped["error"] += 1
                log.exception("archive_failed", seq=item.verdict.seq)

    def _save(self, item: Item) -> None:
        v = item.verdict
        product = _UNSAFE.sub("_", v.product) or "_"
        folder = self.root / product
        stem = stem_for(v)
        blobs = [(".json", verdict_json(v))]
        if item.frame is not None:  # no frame for no_frame / overflow fail-safes: the record alone
            blobs = [(".png", raw_png(item.frame)), (".jpg", annotated_jpeg(item)), *blobs]
        need = sum(len(d) for _, d in blobs)
        if self.floor and self.free_bytes() - need < self.floor:
            self.dropped["low_space"] += 1
            self._enter_low_space("low_space", folder / stem)
            return
        written: list[Path] = []
        try:
            folder.mkdir(exist_ok=True)
            for suffix, data in blobs:
                path = folder / (stem + suffix)
                written.append(path)
                path.write_bytes(data)
        except OSError as e:
            for path in written:
                path.unlink(missing_ok=True)
            self._fail(e, folder / stem)
            return
        size = sum(len(d) for _, d in blobs)
        self._files.setdefault(product, deque()).append((stem, size))
        self._bytes[product] += size
        self.saved += 1
        if self._suspend_reason:
            log.info("archive_resumed", after=self._suspend_reason, path=str(self.root))
            self._suspend_reason = ""
        self._enforce_quota(product)

    def _space_back(self) -> bool:
        """Hysteresis: out of low space only with `resume_at` free, well above the floor."""
        free = self.free_bytes()
        if free < self.resume_at:
            return False
        self._low_space = False
        log.info("archive_space_back", free_mb=round(free / 1e6, 1), resume_free_mb=round(self.resume_at / 1e6, 1))
        return True

    def _enter_low_space(self, reason: str, where: Path) -> None:
        self._low_space = True
        if self._suspend_reason != reason:  # one line per state change, not one per part
            log.error("archive_suspended", reason=reason, path=str(where), free_mb=round(self.free_bytes() / 1e6, 1),
                      min_free_mb=self.cfg.min_free_mb, resume_free_mb=round(self.resume_at / 1e6, 1))
        self._suspend_reason = reason

    def _fail(self, e: OSError, where: Path) -> None:
        reason = _FAILURES.get(e.errno or 0, "error")
        self.dropped[reason] += 1
        self._suspended_until = time.monotonic() + self.retry_s
        if reason == "disk_full":  # someone else filled it: back off until there is room above the floor again
            self._low_space = True
        if self._suspend_reason != reason:  # one line per state change, not one per part
            log.error("archive_suspended", reason=reason, error=str(e), path=str(where), retry_s=self.retry_s)
        self._suspend_reason = reason

    def _enforce_quota(self, product: str) -> None:
        if self.cfg.product_quota_mb is not None:
            cap = self.cfg.product_quota_mb * 1e6
            while self._bytes[product] > cap and self._files[product]:
                self._delete_oldest(product)
        cap = self.cfg.quota_mb * 1e6
        while self.total_bytes > cap:
            candidates = [p for p, files in self._files.items() if files]
            if not candidates:
                break
            self._delete_oldest(min(candidates, key=lambda p: self._files[p][0][0]))

    def _delete_oldest(self, product: str) -> None:
        stem, size = self._files[product].popleft()
        self._bytes[product] -= size
        for suffix in SUFFIXES:
            try:
                (self.root / product / (stem + suffix)).unlink(missing_ok=True)
            except OSError as e:
                log.warning("archive_delete_failed", stem=stem, error=str(e))
        self.deleted += 1

    # -- metrics --------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """Read by the metrics collector at scrape time."""
        yield CounterMetricFamily("inspectd_archive_saved", "parts archived", value=self.saved)
        yield CounterMetricFamily("inspectd_archive_deleted", "archived parts deleted by the quota",
                                  value=self.deleted)
        dropped = CounterMetricFamily("inspectd_archive_dropped", "parts not archived, by reason",
                                      labels=["reason"])
        for reason in ("queue_full", "low_space", "disk_full", "read_only", "suspended", "error"):
            dropped.add_metric([reason], self.dropped.get(reason, 0))
        yield dropped
        yield GaugeMetricFamily("inspectd_archive_bytes", "size of the archive", value=self.total_bytes)
        yield GaugeMetricFamily("inspectd_archive_suspended", "1 while archiving is suspended (free-space floor, "
                                "disk full, read-only)", value=float(self.suspended))
        yield GaugeMetricFamily("inspectd_archive_pending", "parts waiting for the archive writer",
                                value=self.pending)
