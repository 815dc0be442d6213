"""The daemon against a real NOTIFY_SOCKET: READY after start-up, STATUS, keep-alives, no READY when it cannot boot."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd.errors import ExitCode
from tests.conftest import write_station
from tests.onnx_models import brightness_model
from tests.supervise_harness import START_S, DaemonProcess, NotifySocket, journal_rows, parts_in_status


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_status_keepalives_stopping(tmp_path: Path, abstract: bool, supervised) -> None:
    station = write_station(tmp_path, {"camera": {"bank": 8}})
    notify, daemon = supervised(station, abstract=abstract, watchdog_usec=2_000_000)
    ready = notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0)
    assert ready is not None, daemon.stderr()
    # READY comes once camera, backend and journal are up: the journal exists, the status names the product.
    assert (tmp_path / "journal.sqlite").exists()
    assert ready.get("STATUS").startswith("product=disc-a parts=")  # type: ignore[union-attr]
    assert ready.pid == daemon.pid
    assert [m for m in notify.messages if m.has("READY")] == [ready], "READY sent more than once"

    # Parts flow: keep-alives (at least every WATCHDOG_USEC/2 = 1 s) and a STATUS line with counts.
    first = notify.wait_for(lambda m: m.has("WATCHDOG"), 3, daemon.alive)
    assert first is not None
    assert notify.wait_for(lambda m: m.has("WATCHDOG"), 3, daemon.alive) is not None
    status = notify.wait_for(lambda m: m.has("STATUS") and parts_in_status(m) > 0, 10, daemon.alive)
    assert status is not None
    words = dict(w.split("=", 1) for w in status.get("STATUS").split())  # type: ignore[union-attr]
    assert set(words) >= {"product", "parts", "rejects", "failsafes", "fps"}
    assert words["product"] == "disc-a" and float(words["fps"]) > 0
    assert int(words["rejects"]) + int(words["failsafes"]) <= int(words["parts"])

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    notify.settle()
    stopping = [m for m in notify.messages if m.has("STOPPING")]
    assert len(stopping) == 1 and stopping[0].t > status.t
    assert all(m.pid == daemon.pid for m in notify.messages)
    assert journal_rows(tmp_path / "journal.sqlite")


def test_watchdog_meant_for_another_pid_is_not_fed(tmp_path: Path, supervised) -> None:
    """WATCHDOG_PID names the process systemd watches; a process that inherited the variables must not beat."""
    station = write_station(tmp_path, {"camera": {"bank": 8}})
    notify, daemon = supervised(station, watchdog_usec=1_000_000, env={"WATCHDOG_PID": "1"})
    assert notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0), daemon.stderr()
    assert notify.wait_for(lambda m: m.has("STATUS") and parts_in_status(m) > 0, 10, daemon.alive)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert not [m for m in notify.messages if m.has("WATCHDOG")]


def _cannot_boot(supervised: Callable[..., tuple[NotifySocket, DaemonProcess]], station: Path,
                 code: ExitCode) -> tuple[DaemonProcess, NotifySocket]:
    notify, daemon = supervised(station, watchdog_usec=2_000_000)
    assert daemon.wait(START_S) == code, daemon.stderr()
    notify.settle()
    assert not [m for m in notify.messages if m.has("READY")], "READY from a daemon that cannot boot"
    assert not [m for m in notify.messages if m.has("WATCHDOG")]
    return daemon, notify


def test_bad_config_exits_2_without_ready(tmp_path: Path, supervised) -> None:
    station = write_station(tmp_path, {"camera": {"bank": 8}}, {"rules": [{"name": "defect", "class": "defect",
                                                                             "min_score": 2}]})
    daemon, _ = _cannot_boot(supervised, station, ExitCode.CONFIG)
    err = daemon.stderr()
    assert "disc-a.yaml:" in err and "rules[0].min_score: must be <= 1" in err


def test_foreign_model_exits_3_and_says_why(tmp_path: Path, supervised) -> None:
    model = brightness_model(tmp_path / "small.onnx", width=96, height=96)  # the recipe says 224x224
    station = write_station(tmp_path, {"camera": {"bank": 8}}, model=model)
    daemon, notify = _cannot_boot(supervised, station, ExitCode.MODEL)
    status = [m.get("STATUS") for m in notify.messages if m.has("STATUS")]
    assert any(s.startswith("cannot start (exit 3)") for s in status), status  # type: ignore[union-attr]
    assert daemon.events("cannot_start")


def test_failed_golden_gate_exits_4(tmp_path: Path, supervised) -> None:
    golden = tmp_path / "products" / "golden"
    golden.mkdir(parents=True)
    cv2.imwrite(str(golden / "bright.png"), np.full((448, 448), 250, np.uint8))  # the model rejects it
    station = write_station(tmp_path, {"camera": {"bank": 8}},
                            {"golden": [{"image": "golden/bright.png", "expect": "pass"}]},
                            model=brightness_model(tmp_path / "b.onnx"))
    _, notify = _cannot_boot(supervised, station, ExitCode.GOLDEN)
    status = [m.get("STATUS") for m in notify.messages if m.has("STATUS")]
    assert any(s.startswith("cannot start (exit 4)") for s in status), status  # type: ignore[union-attr]
