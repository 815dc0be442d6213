"""Camera loss and recovery: TLSimu behind the fault proxy (tests/genicam/faultshim.c).

A cable pull is simulated by the proxy failing remote register access, stream start and
buffer delivery, and hiding the device from enumeration; replugging clears the faults.
The source must notice, keep answering at once, reconnect through a fresh Harvester, and
re-apply its features; the pipeline must give every trigger exactly one verdict.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspectd.camera.genicam import GenICamConfig, GenICamSource
from inspectd.config.load import load_config
from inspectd.errors import CameraError
from inspectd.pipeline.pipeline import Pipeline
from inspectd.pipeline.runtime import build_runtime
from inspectd.types import Outcome, Trigger
from tests.conftest import write_station
from tests.genicam import provision
from tests.test_pipeline import Collect

SERIAL = "SN_InterfaceA_0"


@pytest.fixture
def shim() -> Iterator[tuple[Path, provision.ShimControl]]:
    provision.harvesters_importable()
    cti, ctl = provision.fault_shim()
    control = provision.ShimControl(ctl)
    control.clear()
    yield cti, control
    control.clear()


def open_source(cti: Path, **kw) -> GenICamSource:
    cfg = GenICamConfig(type="genicam", producers=[cti], use_env_path=False, serial=SERIAL, trigger="software",
                        reconnect_min_s=0.1, reconnect_max_s=0.4, **kw)
    s = GenICamSource(cfg)
    s.open()
    return s


def test_cable_pull_and_replug_through_the_pipeline(tmp_path: Path, shim) -> None:
    cti, control = shim
    # triggers come from this test instead of a PLC link (the station still names one, as the schema requires)
    cfg = load_config(write_station(tmp_path, {"cycle_budget_ms": 2000, "trigger": {"source": "plc"},
                                               "plc": {"type": "modbus_server", "port": 0},
                                               "pipeline": {"grab_timeout_ms": 300}}))
    rt = build_runtime(cfg.station, cfg.products["disc-a"])
    src = open_source(cti, features={"Width": 448, "Height": 448})
    trig_q: queue.Queue[Trigger] = queue.Queue()

    def triggers(timeout: float) -> Trigger | None:
        try:
            return trig_q.get(timeout=timeout)
        except queue.Empty:
            return None

    col = Collect()
    pipe = Pipeline(cfg.station, src, rt, sinks=[col], triggers=triggers)
    pipe.start()
    part_id = 0

    def run_triggers(n: int) -> None:
        nonlocal part_id
        for _ in range(n):
            part_id += 1
            trig_q.put(Trigger(part_id, time.monotonic()))
            time.sleep(0.04)  # TLSimu merges software triggers closer than a few ms
        col.wait(part_id)

    try:
        run_triggers(15)  # plugged
        control.set(provision.ShimControl.CABLE_PULLED)
        run_triggers(15)  # pulled: every trigger must still get its verdict, at once
        assert not src.connected
        time.sleep(0.5)  # the supervisor keeps failing to reconnect meanwhile
        control.clear()  # replugged
        assert src.wait_connected(10), "camera did not come back"
        run_triggers(15)
        verdicts = list(col.wait(45))  # as they stood when the wait ended
    finally:
        pipe.stop()
        src.close()

    assert len(verdicts) == 45
    by_part = Counter(v.part_id for v in verdicts)
    assert sorted(by_part) == list(range(1, 46)) and set(by_part.values()) == {1}, "a trigger got 0 or 2 verdicts"
    outcome = {v.part_id: (v.outcome, v.reason) for v in verdicts}
    assert all(outcome[i][0] is not Outcome.FAILSAFE for i in range(1, 16)), outcome
    pulled = [outcome[i] for i in range(16, 31)]
    assert all(o is Outcome.FAILSAFE and r in ("camera_lost", "no_frame") for o, r in pulled), pulled
    assert sum(r == "camera_lost" for _, r in pulled) >= 14  # at most the first one waits its timeout
    assert all(outcome[i][0] is not Outcome.FAILSAFE for i in range(31, 46)), outcome
    st = src.stats
    assert (st.losses, st.reconnects) == (1, 1) and st.reconnect_failures >= 1
    assert st.frames == 30 and st.missed == 0  # one frame per plugged trigger, none lost or doubled


def test_buffers_stop_while_registers_answer(shim) -> None:
    """Stream dead, control channel alive: lost after lost_after_timeouts grabs, then recovered."""
    cti, control = shim
    src = open_source(cti, lost_after_timeouts=3)
    try:
        src.fire()
        assert src.grab(1.0) is not None
        control.set("B")
        for i in range(3):
            assert src.connected, f"declared lost after {i} timeouts"
            src.fire()
            assert src.grab(0.2) is None
        assert not src.connected and src.stats.timeouts == 3 and src.stats.losses == 1
        control.clear()
        assert src.wait_connected(10)
        src.fire()
        f = src.grab(1.0)
        assert f is not None and src.stats.reconnects >= 1
    finally:
        src.close()


def test_reconnect_waits_out_failing_stream_start_and_reapplies_features(shim) -> None:
    cti, control = shim
    src = open_source(cti)
    try:
        src.apply_features({"Width": 320, "Height": 240})
        src.fire()
        assert src.grab(1.0).image.shape == (240, 320)
        control.set(provision.ShimControl.CABLE_PULLED)
        src.fire()
        assert src.grab(0.5) is None and not src.connected
        control.set("S")  # device back on the bus, but its stream will not start
        time.sleep(1.0)
        assert not src.connected and src.stats.reconnect_failures >= 2
        src.apply_features({"Width": 256, "Height": 128})  # product switch during the loss: kept for later
        t0 = time.monotonic()
        src.fire()
        assert src.grab(1.0) is None and time.monotonic() - t0 < 0.5  # triggered: no waiting (1 s) while lost
        control.clear()
        assert src.wait_connected(10)
        src.fire()
        f = src.grab(1.0)
        assert f is not None and f.image.shape == (128, 256)  # the recipe was re-applied on reconnect
        assert src.stats.losses == 1 and src.stats.reconnects == 1
    finally:
        src.close()


def test_start_without_camera_when_asked(shim) -> None:
    cti, control = shim
    control.set(provision.ShimControl.CABLE_PULLED)
    with pytest.raises(CameraError, match="no camera with serial"):
        open_source(cti)  # default: cannot start -> the daemon exits CAMERA and systemd retries
    src = open_source(cti, wait_for_camera=True)
    try:
        assert not src.connected
        src.fire()
        assert src.grab(0.5) is None
        control.clear()
        assert src.wait_connected(10)
        src.fire()
        assert src.grab(1.0) is not None
    finally:
        src.close()
