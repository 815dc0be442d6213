"""ERROR_CODE 1 (camera), 2 (model), 3 (timeout) come from the conditions that cause them, and READY drops with
them (README "PLC contract"). The real daemon, a pymodbus client as the PLC, real sources: the synthetic camera
with a model that fails or is too slow, and the GenICam TLSimu camera behind the cable-pull fault proxy."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from inspectd.pipeline.health import RUN
from inspectd.plc.config import LayoutConfig
from inspectd.plc.layout import ErrorCode
from tests.genicam import provision
from tests.onnx_models import slow_model
from tests.plc.faults import scanning
from tests.test_plc_contract import WatchedIO, daemon_serving, journal, plc_station, run_daemon
from tests.waiting import wait_until
from tools.plc_sim import ModbusPlcIO, PlcSim


def run_plc(tmp_path: Path, model: Path, parts: int, budget_ms: float = 1000, **over) -> tuple[WatchedIO, PlcSim]:
    path, port = plc_station(tmp_path, budget_ms=budget_ms, model=model, **over)
    with daemon_serving(path, port):
        io = WatchedIO(ModbusPlcIO("127.0.0.1", port, LayoutConfig()))
        sim = PlcSim(io, seed=7)
        sim.run(parts, timeout_s=60)
        io.close()
    return io, sim


def test_model_failing_every_part_raises_error_code_2_and_drops_ready(tmp_path: Path) -> None:
    # replayed images: the first (dark) is the warm-up frame and passes; inference raises on every bright one
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((448, 448), np.uint8))
    for i in range(20):
        cv2.imwrite(str(folder / f"b{i:02}.png"), np.full((448, 448), 255, np.uint8))
    camera = {"type": "replay", "folder": str(folder), "pixel_format": "Mono8", "loop": True}
    parts = 12  # more than the PLC can trigger before the fault is raised: some wait for READY to return
    io, sim = run_plc(tmp_path, slow_model(tmp_path / "bad.onnx", matmuls=1, fail_above=0.5), parts=parts,
                      camera=camera)
    seen, rep = io.seen, sim.report
    assert ErrorCode.MODEL in seen.error_codes, seen.error_codes
    assert seen.ready_with_error == 0
    assert not rep.missing and rep.missed_seen == 0  # READY held the PLC back: no trigger was refused
    assert [r[3] for r in journal(tmp_path)] == [""] + ["stage_error"] * (parts - 1)
    # held HOLD_S after the last failing part, then READY returns (the PLC triggered the parts after the run)
    assert 0 in seen.error_codes[seen.error_codes.index(ErrorCode.MODEL) + 1:]


def test_deadline_run_raises_error_code_3_and_drops_ready(tmp_path: Path) -> None:
    # ~45 ms of inference against a 15 ms budget: every part is a `deadline` fail-safe
    io, sim = run_plc(tmp_path, slow_model(tmp_path / "slow.onnx", matmuls=40), parts=RUN + 2, budget_ms=15)
    seen, rep = io.seen, sim.report
    assert ErrorCode.TIMEOUT in seen.error_codes, seen.error_codes
    assert seen.ready_with_error == 0
    assert not rep.missing and rep.missed_seen == 0
    assert {r[3] for r in journal(tmp_path)} == {"deadline"}


def test_camera_lost_raises_error_code_1_and_drops_ready_until_it_is_back(tmp_path: Path) -> None:
    provision.harvesters_importable()
    cti, ctl = provision.fault_shim()
    control = provision.ShimControl(ctl)
    control.clear()
    camera = {"type": "genicam", "producers": [str(cti)], "use_env_path": False, "serial": "SN_InterfaceA_0",
              "trigger": "software", "reconnect_min_s": 0.1, "reconnect_max_s": 0.4,
              "features": {"Width": 448, "Height": 448}}
    path, port = plc_station(tmp_path, budget_ms=2000, model=slow_model(tmp_path / "m.onnx", matmuls=1),
                             camera=camera, pipeline={"grab_timeout_ms": 300})
    d, t = run_daemon(path, port)
    try:
        io = WatchedIO(ModbusPlcIO("127.0.0.1", port, LayoutConfig()))
        # TLSimu merges software triggers closer than a few ms
        with scanning(PlcSim(io, seed=8, period_s=0.04)) as report:
            wait_until(lambda: len(report.results) >= 5, 60, "5 results with the camera plugged")
            control.set(provision.ShimControl.CABLE_PULLED)
            wait_until(lambda: ErrorCode.CAMERA in io.seen.error_codes, 30, "ERROR_CODE 1 at the PLC")
            pulled_at = len(report.triggered)
            time.sleep(1.0)  # READY stays low while the camera is away: the PLC triggers nothing
            assert len(report.triggered) <= pulled_at + 1
            control.clear()  # replugged
            wait_until(lambda: len(report.results) >= pulled_at + 5, 60, "5 more results after the replug")
    finally:
        d.request_stop()
        t.join(60)
        control.clear()
    seen = io.seen
    assert seen.ready_with_error == 0
    assert seen.error_codes[seen.error_codes.index(ErrorCode.CAMERA) + 1] == 0  # back to no error once replugged
    assert not [pid for pid in seen.acked if pid not in report.results]  # every accepted trigger answered
