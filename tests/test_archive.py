"""Reject archive: image content and names, sampling, quotas, and a full or read-only disk that never stops
the inspection (real tmpfs mounts, real daemon)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from structlog.testing import capture_logs

from inspectd.archive import Archive, stem_for
from inspectd.config.load import load_config
from inspectd.config.schema import ArchiveConfig
from inspectd.daemon import Daemon, Options
from inspectd.pipeline.runtime import ProductRuntime, build_runtime
from inspectd.types import Findings, Frame, Outcome, Part, Trigger, Verdict
from tests.conftest import write_station
from tests.tmpfs import mounted_tmpfs

ROI = {"x": 100, "y": 40, "width": 160, "height": 120}
NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_s\d{8}_p\d+_(pass|reject|failsafe)$")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Iterator[ProductRuntime]:
    """A real product runtime whose recipe has ROI x=100 y=40 160x120 (the archive draws it)."""
    folder = tmp_path_factory.mktemp("station")
    cfg = load_config(write_station(folder, product={"preprocess": {"roi": ROI}}))
    rt = build_runtime(cfg.station, cfg.products["disc-a"])
    yield rt
    rt.close()


def make_part(seq: int, image: np.ndarray, pixel_format: str, outcome: Outcome = Outcome.REJECT,
              product: str = "disc-a", heatmap: np.ndarray | None = None,
              runtime: ProductRuntime | None = None) -> tuple[Verdict, Part]:
    part = Part(seq, Trigger(seq, time.monotonic()), product, deadline=time.monotonic() + 1)
    part.frame = Frame(image=image, pixel_format=pixel_format, t_grab=time.monotonic())
    part.findings = Findings({"good": 0.1, "defect": 0.9}, "defect",
                             {"heatmap": heatmap} if heatmap is not None else {})
    part.runtime = runtime
    v = Verdict(seq=seq, part_id=1000 + seq, product=product, outcome=outcome,
                reason="" if outcome is Outcome.PASS else "defect", result_code=1, plc_ok=False, score=0.9,
                scores={"good": 0.1, "defect": 0.9}, t_trigger=time.monotonic() - 0.01, t_verdict=time.monotonic(),
                truth=None, model_sha256="ab" * 32, stage_ms={"grab": 1.0}, wall_time=time.time() + seq * 1e-3)
    return v, part


def drain(archive: Archive, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while archive.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the item taken last is being written


def noise(shape: tuple[int, ...], dtype, hi: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hi, shape, dtype=np.int64).astype(dtype)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (we are root in CI and here); skipped where mounting is not allowed."""
    with mounted_tmpfs(tmp_path / "tmpfs", 2) as mnt:
        yield mnt


def test_images_lossless_16bit_and_annotated(tmp_path: Path, runtime: ProductRuntime) -> None:
    archive = Archive(ArchiveConfig(path=tmp_path / "a"))
    archive.start()
    mono12 = noise((200, 300), np.uint16, 4096)
    heat = np.zeros((28, 28), np.float32)
    heat[:14, :14] = 1.0  # top-left quarter of the ROI is "defect"
    v1, p1 = make_part(1, mono12, "Mono12", heatmap=heat, runtime=runtime)
    rgb = noise((64, 80, 3), np.uint8, 256, seed=1)
    v2, p2 = make_part(2, rgb, "RGB8", outcome=Outcome.FAILSAFE)
    archive.submit(v1, p1)
    archive.submit(v2, p2)
    drain(archive)
    archive.close()
    files = sorted((tmp_path / "a" / "disc-a").iterdir())
    stems = sorted({f.name.rsplit(".", 1)[0] for f in files})
    assert stems == sorted([stem_for(v1), stem_for(v2)]) and all(NAME.match(s) for s in stems)
    assert {f.suffix for f in files} == {".png", ".jpg", ".json"} and len(files) == 6

    raw = cv2.imread(str(tmp_path / "a" / "disc-a" / f"{stem_for(v1)}.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and np.array_equal(raw, mono12)  # lossless, 16-bit kept
    back = cv2.imread(str(tmp_path / "a" / "disc-a" / f"{stem_for(v2)}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back[..., ::-1], rgb)  # colours in the right order

    jpg = cv2.imread(str(tmp_path / "a" / "disc-a" / f"{stem_for(v1)}.jpg"))
    assert jpg.shape == (200, 300, 3)
    hot = jpg[60:90, 120:170].astype(int)  # inside the heatmap's defect quarter: coloured
    cold = jpg[130:150, 200:250].astype(int)  # inside the ROI, heatmap 0: still grey
    assert np.abs(hot[..., 0] - hot[..., 2]).mean() > 40
    assert np.abs(cold[..., 0] - cold[..., 2]).mean() < 10
    edge = jpg[40:42, 110:250].reshape(-1, 3).mean(axis=0)  # the ROI's top edge, drawn in red (reject)
    assert edge[2] > 150 and edge[1] < 100


def test_pass_sampling_is_exact(tmp_path: Path) -> None:
    archive = Archive(ArchiveConfig(path=tmp_path / "a", sample_pass=0.25))
    passes = [make_part(i, np.zeros((8, 8), np.uint8), "Mono8", Outcome.PASS)[0] for i in range(100)]
    assert sum(archive.wanted(v) for v in passes) == 25
    reject = make_part(1, np.zeros((8, 8), np.uint8), "Mono8", Outcome.REJECT)[0]
    assert archive.wanted(reject)


def test_submit_never_blocks_when_the_writer_is_behind(tmp_path: Path) -> None:
    archive = Archive(ArchiveConfig(path=tmp_path / "a", queue=2))  # not started: nothing drains the queue
    v, p = make_part(1, noise((480, 640), np.uint8, 256), "Mono8")
    t0 = time.perf_counter()
    for _ in range(50):
        archive.submit(v, p)
    assert (time.perf_counter() - t0) / 50 < 0.02  # a blocking submit would wait forever (nothing drains)
    assert archive.dropped["queue_full"] == 48 and archive.pending == 2


def test_quota_whole_and_per_product_deletes_oldest(tmp_path: Path) -> None:
    root = tmp_path / "a"
    cfg = ArchiveConfig(path=root, quota_mb=0.6, product_quota_mb=0.25)
    archive = Archive(cfg)
    archive.start()
    verdicts = []
    for i in range(1, 41):
        v, p = make_part(i, noise((160, 200), np.uint8, 256, seed=i), "Mono8",
                         product="disc-a" if i % 4 else "disc-b")  # disc-b: every 4th part
        verdicts.append(v)
        archive.submit(v, p)
        drain(archive)
    archive.close()
    on_disk = {d.name: sum(f.stat().st_size for f in d.iterdir()) for d in root.iterdir()}
    assert sum(on_disk.values()) == archive.total_bytes <= 0.6e6
    assert on_disk["disc-a"] <= 0.25e6 and on_disk["disc-b"] <= 0.25e6
    assert archive.deleted > 0
    for product in ("disc-a", "disc-b"):
        kept = sorted(f.name.rsplit(".", 1)[0] for f in (root / product).glob("*.json"))
        mine = [stem_for(v) for v in verdicts if v.product == product]
        assert kept == mine[len(mine) - len(kept):]  # exactly the newest survive
    # A restart counts what is already there against the quota.
    again = Archive(cfg)
    again.start()
    assert again.total_bytes == archive.total_bytes
    again.close()


def test_read_only_disk_suspends_then_resumes(tmpfs: Path) -> None:
    archive = Archive(ArchiveConfig(path=tmpfs / "a", min_free_mb=0), retry_s=0.3)  # no floor: the rw/ro path
    archive.start()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    img = noise((100, 100), np.uint8, 256)
    with capture_logs() as logs:
        for i in range(1, 4):
            archive.submit(*make_part(i, img, "Mono8"))
        drain(archive)
        assert archive.dropped["read_only"] == 1 and archive.dropped["suspended"] == 2 and archive.saved == 0
        assert archive.suspended
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
        time.sleep(0.35)
        archive.submit(*make_part(4, img, "Mono8"))
        drain(archive)
    archive.close()
    assert archive.saved == 1 and not archive.suspended
    events = [e["event"] for e in logs]
    assert events.count("archive_suspended") == 1 and events.count("archive_resumed") == 1


def test_full_disk_never_stops_the_inspection(tmpfs: Path, tmp_path: Path) -> None:
    """Archive every part (sample_pass 1) onto a 2 MiB tmpfs with a quota far above it: the disk fills;
    every part still gets its verdict in the journal, which lives on another disk."""
    parts = 60
    path = write_station(tmp_path, {"camera": {"bank": 8, "rate_hz": 50},
                                    "archive": {"enabled": True, "path": str(tmpfs / "archive"), "sample_pass": 1.0,
                                                "quota_mb": 500, "min_free_mb": 0},  # no floor: ENOSPC itself
                                    "metrics": {"enabled": True, "port": 0}})
    daemon = Daemon(load_config(path), Options(handle_signals=False, max_parts=parts))
    with capture_logs() as logs:
        daemon.start()
        try:
            deadline = time.monotonic() + 60
            while daemon.journal.written < parts and time.monotonic() < deadline:
                time.sleep(0.05)
            archive = daemon.archive
            assert archive is not None
            drain(archive)
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics.server.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        finally:
            daemon.shutdown()
    rows = sqlite3.connect(str(daemon.journal.path)).execute("SELECT seq FROM verdicts ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(1, parts + 1))  # every part, exactly once
    assert archive.saved >= 1 and archive.dropped["disk_full"] == 1
    assert sum(archive.dropped.values()) + archive.saved == parts  # every part archived or counted
    assert set(archive.dropped) <= {"disk_full", "suspended", "queue_full"}
    assert 'inspectd_archive_dropped_total{reason="disk_full"} 1.0' in text
    assert "inspectd_archive_suspended 1.0" in text
    assert [e["event"] for e in logs].count("archive_suspended") == 1  # one line, not one per part
    # No half-written parts: every name on disk has all three files.
    names = [f.name.rsplit(".", 1)[0] for f in (tmpfs / "archive" / "disc-a").iterdir()]
    assert len(names) == 3 * archive.saved and all(names.count(n) == 3 for n in names)


def test_free_space_floor_stops_the_archive_and_hysteresis_keeps_it_off(tmp_path: Path) -> None:
    """An 8 MiB tmpfs shared with 'the journal' (a file we grow): the archive never writes below its 3 MB floor,
    and once stopped it waits for 5 MB free, not just for a byte above the floor (it would refill the disk)."""
    with mounted_tmpfs(tmp_path / "disk", 8) as mnt:
        archive = Archive(ArchiveConfig(path=mnt / "a", min_free_mb=3, resume_free_mb=5, quota_mb=100, queue=256))
        archive.start()
        img = noise((300, 300), np.uint8, 256)  # incompressible: ~90 kB PNG + JPEG per part
        with capture_logs() as logs:
            for i in range(1, 101):
                archive.submit(*make_part(i, img, "Mono8"))
            drain(archive)
            assert archive.dropped["low_space"] == 1 and archive.saved > 10 and archive.suspended
            free = archive.free_bytes()
            assert 3e6 <= free < 3e6 + 200e3  # stopped at the floor, not at the disk's end
            assert archive.dropped["disk_full"] == 0 and archive.saved + sum(archive.dropped.values()) == 100
            # Space comes back, but less than the resume level: still off.
            ballast = mnt / "journal"
            ballast.write_bytes(b"\0" * 2_500_000)  # the journal grows into the room the archive left
            assert archive.free_bytes() < 1e6
            ballast.unlink()
            for i in range(101, 106):
                archive.submit(*make_part(i, img, "Mono8"))
            drain(archive)
            assert archive.saved + sum(archive.dropped.values()) == 105 and archive.suspended
            # Someone frees enough (archived parts deleted by hand): it resumes, and stops at the floor again.
            for f in sorted((mnt / "a" / "disc-a").iterdir())[:60]:
                f.unlink()
            assert archive.free_bytes() >= 5e6
            saved = archive.saved
            for i in range(106, 200):
                archive.submit(*make_part(i, img, "Mono8"))
            drain(archive)
            assert archive.saved > saved and archive.free_bytes() >= 3e6
        archive.close()
        events = [e["event"] for e in logs]
        assert events.count("archive_space_back") == 1 and events.count("archive_suspended") == 2

