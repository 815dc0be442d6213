"""Metrics endpoint: scraped over real HTTP while the daemon runs; counters and histograms equal the journal."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.metrics import Metrics, latency_buckets
from tests.conftest import write_station
from tests.waiting import wait_until

PARTS = 40


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:  # 503 from /readyz is an answer, not a failure
        return e.code, e.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_latency_buckets_resolve_p99_near_the_budget() -> None:
    budget = 0.050
    b = latency_buckets(budget)
    assert list(b) == sorted(set(b))
    assert budget in b and b[0] <= budget / 400 and b[-1] >= 10 * budget
    near = [x for x in b if 0.5 * budget <= x <= 1.2 * budget]
    assert max(hi - lo for lo, hi in itertools.pairwise(near)) <= 0.025 * budget + 1e-12  # 1.25 ms steps at 50 ms
    small = [x for x in b if x < 0.5 * budget]
    assert max(hi / lo for lo, hi in itertools.pairwise(small)) <= 1.26  # stage times: 25 % steps
    assert latency_buckets(2.0)[-1] == 20.0  # derived from the budget, not fixed


@pytest.fixture
def daemon(tmp_path: Path):
    # A reject rule the brightness model trips on some parts, so verdicts come in both kinds.
    path = write_station(tmp_path, {"camera": {"bank": 8}, "metrics": {"enabled": True, "port": 0},
                                    "archive": {"enabled": False}},
                         {"rules": [{"name": "defect", "class": "defect", "min_score": 0.35, "result_code": 1}]})
    d = Daemon(load_config(path), Options(handle_signals=False, max_parts=PARTS))
    yield d
    d.shutdown()


def test_scrape_while_running_matches_journal(daemon: Daemon) -> None:
    daemon.start()  # threads run; the pipeline stops admitting at PARTS but the daemon stays up
    assert daemon.metrics is not None and daemon.metrics.server is not None
    base = f"http://127.0.0.1:{daemon.metrics.server.port}"
    seen = []
    while daemon.journal.written < PARTS:  # scrape during production: counters only ever grow
        status, body = get(base + "/metrics")
        assert status == 200
        s = samples(body.decode())
        seen.append(sum(v for (n, _), v in s.items() if n == "inspectd_parts_total"))
        time.sleep(0.1)
    assert seen == sorted(seen) and len(seen) > 3
    wait_until(lambda: daemon.metrics.pending == 0, 30)
    status, body = get(base + "/metrics")
    s = samples(body.decode())

    db = sqlite3.connect(str(daemon.journal.path))
    by_verdict = dict(((p, v), n) for p, v, n in db.execute(
        "SELECT product, verdict, COUNT(*) FROM verdicts GROUP BY product, verdict"))
    assert sum(by_verdict.values()) == PARTS
    assert len(by_verdict) >= 2, by_verdict  # the reject rule fired on some parts, not all
    scraped = {(dict(k)["product"], dict(k)["verdict"]): v for (n, k), v in s.items() if n == "inspectd_parts_total"}
    assert scraped == by_verdict
    failsafes = dict(db.execute("SELECT reason, COUNT(*) FROM verdicts WHERE verdict = 'failsafe' GROUP BY reason"))
    assert {dict(k)["reason"]: v for (n, k), v in s.items() if n == "inspectd_failsafes_total"} == failsafes
    assert s[("inspectd_deadline_misses_total", ())] == failsafes.get("deadline", 0)
    assert s[("inspectd_journal_written_total", ())] == PARTS

    # Every histogram bucket equals the journal's count of latencies at or under its bound.
    latencies = [r[0] / 1e3 for r in db.execute("SELECT latency_ms FROM verdicts")]
    buckets = {float(dict(k)["le"]): v for (n, k), v in s.items()
               if n == "inspectd_cycle_seconds_bucket" and dict(k)["product"] == "disc-a"}
    assert len(buckets) > 40
    for le, count in buckets.items():
        assert count == sum(1 for x in latencies if x <= le), le
    stage_rows = [json.loads(r[0]) for r in db.execute("SELECT stage_ms FROM verdicts")]
    for key, label in (("preprocess", "preprocess"), ("infer", "infer"), ("decide", "postprocess_decide")):
        assert s[("inspectd_stage_seconds_count", (("stage", label),))] == sum(key in r for r in stage_rows)
    model = [dict(k) for (n, k), _ in s.items() if n == "inspectd_model_info"]
    assert model and model[0]["backend"] == "onnxruntime" and len(model[0]["sha256"]) == 64
    assert s[("inspectd_camera_connected", ())] == 1.0

    # The PLC engineer's hook lands in the stage histogram.
    daemon.metrics.observe_plc_write(0.0042)
    s = samples(get(base + "/metrics")[1].decode())
    assert s[("inspectd_stage_seconds_count", (("stage", "plc_write"),))] == 1
    assert s[("inspectd_stage_seconds_sum", (("stage", "plc_write"),))] == pytest.approx(0.0042)


def test_health_and_readiness(daemon: Daemon) -> None:
    daemon.start()
    base = f"http://127.0.0.1:{daemon.metrics.server.port}"
    status, body = get(base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "alive"
    status, body = get(base + "/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "checks": {"camera": True, "backend": True, "golden": True,
                                                          "plc": True, "journal": True}}

    daemon.source.close()  # the real source disconnects: not ready, still alive
    status, body = get(base + "/readyz")
    assert status == 503 and json.loads(body)["checks"] == {"camera": False, "backend": True, "golden": True,
                                                            "plc": True, "journal": True}
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/nope")[0] == 404


def test_readyz_waits_for_the_plc(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: the real Modbus client link cannot connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_station(tmp_path, {"camera": {"bank": 4}, "metrics": {"enabled": True, "port": 0},
                                    "archive": {"enabled": False},
                                    "plc": {"type": "modbus_client", "host": "127.0.0.1", "port": port}})
    d = Daemon(load_config(path), Options(handle_signals=False, max_parts=3))
    try:
        d.start()
        base = f"http://127.0.0.1:{d.metrics.server.port}"
        status, body = get(base + "/readyz")
        assert status == 503 and json.loads(body)["checks"] == {"camera": True, "backend": True, "golden": True,
                                                                "plc": False, "journal": True}
        wait_until(lambda: d.plc.stats.connect_failures > 0, 10)
        s = samples(get(base + "/metrics")[1].decode())
        assert s[("inspectd_plc_configured", ())] == 1.0 and s[("inspectd_plc_connected", ())] == 0.0
        assert s[("inspectd_plc_connect_failures_total", ())] >= 1
        assert s[("inspectd_ready_check", (("check", "plc"),))] == 0.0
    finally:
        d.shutdown()


def test_scrape_does_not_wait_for_a_slow_sensor(tmp_path: Path) -> None:
    # A sensor source that takes 3 s (a hung nvidia-smi is killed by its timeout): the scrape reads the cache.
    slow = tmp_path / "nvidia-smi"
    slow.write_text("#!/bin/sh\nsleep 3\necho '0, GPU, 50, 1000, 2000'\n")
    slow.chmod(0o755)
    from inspectd.sensors import HostSensors

    m = Metrics(0.05, sensors=HostSensors(root=tmp_path, nvidia_smi=str(slow), period_s=60, smi_timeout_s=5))
    m.start("127.0.0.1", 0)
    try:
        t0 = time.monotonic()
        status, _ = get(f"http://127.0.0.1:{m.server.port}/metrics")
        assert status == 200 and time.monotonic() - t0 < 2.5  # not the sensor's 3 s
        wait_until(lambda: m.sensors.polls == 1, 10)
        s = samples(get(f"http://127.0.0.1:{m.server.port}/metrics")[1].decode())
        assert s[("inspectd_temperature_celsius", (("sensor", "gpu0"),))] == 50.0
        assert s[("inspectd_clock_hz", (("device", "gpu0/sm"),))] == 1e9
    finally:
        m.close()


def test_bind_failure_does_not_stop_the_daemon(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_station(tmp_path, {"camera": {"bank": 4}, "metrics": {"enabled": True, "port": port},
                                        "archive": {"enabled": False}})
        d = Daemon(load_config(path), Options(handle_signals=False, max_parts=5))
        t = threading.Thread(target=d.run)
        t.start()
        t.join(60)
        assert not t.is_alive() and d.exit_code == 0
        assert d.journal.written == 5 and d.metrics.server is None


def test_deadline_misses_match_the_journal(tmp_path: Path) -> None:
    # A 1 ms budget that preprocessing alone overruns: most parts get the deadline fail-safe.
    path = write_station(tmp_path, {"cycle_budget_ms": 1, "camera": {"bank": 4}, "archive": {"enabled": False},
                                    "metrics": {"enabled": True, "port": 0}, "log": {"every_part": False}})
    d = Daemon(load_config(path), Options(handle_signals=False, max_parts=20))
    try:
        d.start()
        wait_until(lambda: d.journal.written == 20 and d.metrics.pending == 0, 30)
        s = samples(get(f"http://127.0.0.1:{d.metrics.server.port}/metrics")[1].decode())
    finally:
        d.shutdown()
    db = sqlite3.connect(str(d.journal.path))
    misses = db.execute("SELECT COUNT(*) FROM verdicts WHERE verdict = 'failsafe' AND reason = 'deadline'")
    misses = misses.fetchone()[0]
    assert misses > 0
    assert s[("inspectd_deadline_misses_total", ())] == misses
    assert s[("inspectd_failsafes_total", (("reason", "deadline"),))] == misses
    assert s[("inspectd_parts_total", (("product", "disc-a"), ("verdict", "failsafe")))] >= misses
    assert s[("inspectd_cycle_budget_seconds", ())] == 0.001
    # fail-safes land at the deadline plus scheduling delay (here up to ~10 ms); buckets around the budget agree
    latencies = [r[0] / 1e3 for r in db.execute("SELECT latency_ms FROM verdicts")]
    for le in ("0.00095", "0.001", "0.0015", "0.002"):
        assert s[("inspectd_cycle_seconds_bucket", (("le", le), ("product", "disc-a")))] == sum(
            x <= float(le) for x in latencies)


def test_keep_warm_runs_and_failures_are_counted_and_parts_still_judged(tmp_path: Path) -> None:
    """A line at 4 parts/s with keep-warm after 0.05 s: dummy inferences run in the gaps and are counted. One that
    raises (injected: the backend fails on keep-warm's all-zero input, as a lost GPU would) is counted as a
    failure and logged; the parts around it are judged as before."""
    path = write_station(tmp_path, {"camera": {"bank": 4, "rate_hz": 4}, "archive": {"enabled": False},
                                    "metrics": {"enabled": True, "port": 0}, "log": {"every_part": False},
                                    "watchdog": {"keep_warm_s": 0.05}})
    d = Daemon(load_config(path), Options(handle_signals=False, max_parts=6))
    try:
        d.start()
        assert d.pipeline is not None
        backend = d.pipeline.active.backend
        real = backend.infer

        def infer(tensor: Any) -> dict[str, Any]:
            if not tensor.any():
                raise RuntimeError("injected: device lost")
            return real(tensor)

        wait_until(lambda: d.pipeline.infer.warmups >= 1, 30)
        backend.infer = infer  # fault injection: what keep-warm meets when the device is gone
        wait_until(lambda: d.pipeline.infer.warmup_failures >= 1 and d.journal.written == 6, 30)
        s = samples(get(f"http://127.0.0.1:{d.metrics.server.port}/metrics")[1].decode())
    finally:
        d.shutdown()
    assert s[("inspectd_keep_warm_runs_total", ())] >= 1
    assert s[("inspectd_keep_warm_failures_total", ())] >= 1
    db = sqlite3.connect(str(d.journal.path))
    assert db.execute("SELECT COUNT(*) FROM verdicts WHERE verdict != 'failsafe'").fetchone()[0] == 6
