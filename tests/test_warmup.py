"""Warm-up before READY: each product's part path runs on a frame of the camera's geometry before the daemon says
READY (GPU kernels compiled, sessions run); sources give that frame and the memory their frames live in."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog.testing

from inspectd.camera.config import ReplayConfig, SyntheticConfig
from inspectd.camera.registry import make_source
from inspectd.camera.replay import ReplaySource
from inspectd.camera.synthetic import SyntheticSource
from inspectd.config.load import load_config
from inspectd.pipeline.pipeline import Pipeline
from inspectd.pipeline.runtime import build_runtime
from tests.conftest import write_station
from tests.test_reload_safety import reload_and_wait, running
from tests.waiting import wait_until


def test_synthetic_frames_are_views_of_one_block_and_sample_has_their_geometry() -> None:
    src = SyntheticSource(SyntheticConfig(type="synthetic", size=96, bank=5, seed=3))
    assert src.sample() is None and src.host_buffers() == []  # nothing before open
    src.open()
    try:
        (block,) = src.host_buffers()
        assert block.shape == (5, 96, 96) and block.flags.c_contiguous
        frames = [src.grab(1.0) for _ in range(7)]
        assert all(f is not None and np.shares_memory(f.image, block) for f in frames)
        sample = src.sample()
        assert sample is not None and sample.image.shape == frames[0].image.shape  # type: ignore[union-attr]
        assert sample.pixel_format == frames[0].pixel_format  # type: ignore[union-attr]
    finally:
        src.close()


def test_replay_sample_and_buffers(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), np.full((40, 60), 10 * i, np.uint8))
    src = ReplaySource(ReplayConfig(type="replay", folder=tmp_path))
    src.open()
    try:
        sample = src.sample()
        assert sample is not None and sample.image.shape == (40, 60) and sample.meta["file"] == "p0.png"
        frame = src.grab(1.0)
        assert frame is not None
        assert any(np.shares_memory(frame.image, b) for b in src.host_buffers())
    finally:
        src.close()


def test_daemon_warms_each_product_before_ready(tmp_path: Path) -> None:
    station = write_station(tmp_path, {"camera": {"bank": 4}})
    p = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station), "--max-parts", "3"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert "warmed_up" in names and "ready" in names
    warmed = names.index("warmed_up")
    assert warmed < names.index("ready")
    assert events[warmed]["product"] == "disc-a" and len(events[warmed]["runs_ms"]) == 3
    # the model ran on the pipeline's inference thread: ONNX Runtime's CUDA provider keeps its handles and CUDA
    # graph per thread, so a warm-up on the main thread would leave them to the first parts
    assert events[warmed]["infer_thread"] == "infer"


def test_reload_warms_the_new_runtime_on_the_infer_thread_between_parts(tmp_path: Path) -> None:
    d, t = running(tmp_path)
    try:
        with structlog.testing.capture_logs() as logs:
            reload_and_wait(d, 1)
        assert d.reloads == {"applied": 1, "rejected": 0}
        names = [e["event"] for e in logs]
        warmed = [e for e in logs if e["event"] == "warmed_up"]
        assert len(warmed) == 1 and warmed[0]["infer_thread"] == "infer" and len(warmed[0]["runs_ms"]) == 3
        assert names.index("warmed_up") < names.index("reloaded")  # before the switch
        n = d.pipeline.stats.verdicts_total  # type: ignore[union-attr]
        wait_until(lambda: d.pipeline is not None and d.pipeline.stats.verdicts_total > n + 3, 30)
    finally:
        d.request_stop()
        t.join(60)
    assert d.exit_code == 0 and d.pipeline is not None and d.pipeline.stats.stage_errors == 0


def test_a_chore_runs_on_the_stage_thread_in_order_and_raises_to_its_caller(tmp_path: Path) -> None:
    cfg = load_config(write_station(tmp_path, {"camera": {"bank": 4}}))
    rt = build_runtime(cfg.station, cfg.products["disc-a"])
    source = make_source(cfg.station.camera)
    source.open()
    pipe = Pipeline(cfg.station, source, rt)
    pipe.set_max_parts(0)
    pipe.start()
    try:
        assert pipe.infer.call(lambda: threading.current_thread().name, 10) == "infer"

        def fails() -> None:
            raise ValueError("from the infer thread")

        with pytest.raises(ValueError, match="from the infer thread"):
            pipe.infer.call(fails, 10)
        assert pipe.infer.is_alive()  # the stage carries on
    finally:
        pipe.stop()
        source.close()
        rt.close()
