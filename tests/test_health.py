"""/healthz can fail: it reports the main loop's age and answers 503 once the loop is overdue."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.supervise.liveness import Liveness
from tests.conftest import write_station
from tests.test_metrics import get
from tests.waiting import wait_until


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_liveness_is_overdue_after_the_limit_unless_a_long_step_was_announced():
    clock = FakeClock()
    live = Liveness(limit_s=10, clock=clock)
    clock.t += 9.9
    assert not live.check().overdue and live.check().age_s == pytest.approx(9.9)
    clock.t += 0.2
    assert live.check().overdue
    live.beat()
    assert not live.check().overdue and live.check().age_s == 0
    live.extend(120)  # loading a model: the loop will be away that long
    clock.t += 125
    health = live.check()
    assert not health.overdue and health.age_s == pytest.approx(125) and health.limit_s == pytest.approx(130)
    clock.t += 6
    assert live.check().overdue


def test_healthz_fails_while_the_main_loop_hangs(tmp_path: Path):
    """The real daemon's main loop, blocked in a step (a reload that does not return): /healthz turns 503,
    and 200 again when the loop comes back. /readyz is not what says so: the parts keep their verdicts."""
    path = write_station(tmp_path, {"camera": {"bank": 4}, "metrics": {"enabled": True, "port": 0},
                                    "archive": {"enabled": False}})
    daemon = Daemon(load_config(path), Options(handle_signals=False))
    daemon.liveness = Liveness(limit_s=0.5)
    release, entered = threading.Event(), threading.Event()

    def hung_reload() -> bool:
        entered.set()
        return release.wait(60)

    daemon.reload = hung_reload  # type: ignore[method-assign]
    runner = threading.Thread(target=daemon.run, name="daemon-main")
    runner.start()
    try:
        wait_until(lambda: daemon.metrics is not None and daemon.metrics.server is not None and
                   daemon.pipeline is not None, 30)
        base = f"http://127.0.0.1:{daemon.metrics.server.port}"
        wait_until(lambda: get(base + "/healthz")[0] == 200, 30)
        body = json.loads(get(base + "/healthz")[1])
        assert body["status"] == "alive" and 0 <= body["loop_age_s"] < body["loop_limit_s"]

        daemon.request_reload()  # the loop enters the step and stays there
        assert entered.wait(30)
        wait_until(lambda: get(base + "/healthz")[0] == 503, 30)
        status, raw = get(base + "/healthz")
        body = json.loads(raw)
        assert status == 503 and body["status"] == "overdue" and body["loop_age_s"] > 0.5
        metrics = get(base + "/metrics")[1].decode()
        age = next(float(line.split()[1]) for line in metrics.splitlines()
                   if line.startswith("inspectd_main_loop_age_seconds "))
        assert age > 0.5

        release.set()
        wait_until(lambda: get(base + "/healthz")[0] == 200, 30)
    finally:
        release.set()
        daemon.request_stop()
        runner.join(60)
    assert not runner.is_alive()


def test_readyz_backend_fails_when_a_stage_thread_is_gone(tmp_path: Path):
    """The backend check is real: once the inference stage's thread has ended, /readyz says not ready."""
    path = write_station(tmp_path, {"camera": {"bank": 4, "rate_hz": 50}, "metrics": {"enabled": True, "port": 0},
                                    "archive": {"enabled": False}})
    daemon = Daemon(load_config(path), Options(handle_signals=False))
    try:
        daemon.start()
        base = f"http://127.0.0.1:{daemon.metrics.server.port}"
        wait_until(lambda: get(base + "/readyz")[0] == 200, 30)
        daemon.pipeline.queues["infer"].put(None)  # the stop sentinel: the infer and decide threads end
        wait_until(lambda: not daemon.pipeline.infer.is_alive(), 30)
        status, raw = get(base + "/readyz")
        assert status == 503 and json.loads(raw)["checks"]["backend"] is False
        assert json.loads(raw)["checks"]["camera"] is True
    finally:
        daemon.shutdown()
