"""Reload is safe: any failure keeps the old config and runtimes, old runtimes are closed once the parts inspected
with them have drained (no leak per SIGHUP), a model that fails its self-check is refused on reload, and no
signal during start-up kills the process."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import inspectd.daemon
from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.pipeline.runtime import ProductRuntime
from tests.conftest import ROOT, write_station
from tests.onnx_models import brightness_model, odd_output_model
from tests.supervise_harness import START_S, journal_rows, parts_in_status
from tests.waiting import wait_until


def running(tmp_path: Path, **station) -> tuple[Daemon, threading.Thread]:
    """The daemon in-process, parts flowing as fast as two at a time go: a part is in flight at any moment."""
    over = {"camera": {"bank": 8, "rate_hz": None}, "pipeline": {"max_in_flight": 2}, "cycle_budget_ms": 500,
            "archive": {"enabled": False}, "log": {"every_part": False}, **station}
    d = Daemon(load_config(write_station(tmp_path, over)), Options(handle_signals=False))
    t = threading.Thread(target=d.run, name="daemon-main")
    t.start()
    wait_until(lambda: d.pipeline is not None and d.pipeline.stats.verdicts_total > 5, 60)
    return d, t


def reload_and_wait(d: Daemon, applied: int) -> None:
    d.request_reload()
    wait_until(lambda: d.reloads["applied"] + d.reloads["rejected"] >= applied, 60)


def test_reloads_under_load_close_each_old_runtime_once_its_parts_have_drained(tmp_path: Path) -> None:
    d, t = running(tmp_path)
    retired: list[ProductRuntime] = []
    try:
        for i in range(1, 6):
            old = d.runtimes["disc-a"]
            reload_and_wait(d, i)
            assert d.reloads == {"applied": i, "rejected": 0}
            assert d.runtimes["disc-a"] is not old
            retired.append(old)
            wait_until(lambda old=old: old.closed, 30)  # closed once drained, by the main loop, parts still flowing
            assert d.pipeline is not None and not d.pipeline.uses(old)
            n = d.pipeline.stats.verdicts_total
            wait_until(lambda n=n: d.pipeline is not None and d.pipeline.stats.verdicts_total > n + 3, 30)
    finally:
        d.request_stop()
        t.join(60)
    assert not t.is_alive() and d.exit_code == 0
    assert all(rt.closed and rt.backend._session is None for rt in retired)  # type: ignore[attr-defined]
    assert len({id(rt) for rt in retired}) == 5
    stats = d.pipeline.stats
    # Closing a runtime under a part in flight would fail that part (`stage_error`): none did.
    assert stats.stage_errors == 0
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = db.execute("SELECT seq, verdict, reason FROM verdicts ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(1, stats.parts_in + 1))
    assert not [r for r in rows if r[2] == "stage_error"]


def test_a_reload_that_raises_anything_keeps_the_old_config_and_runtimes(tmp_path: Path, monkeypatch) -> None:
    """Fault injection where a real one cannot be made on demand: building the new runtimes raises what a GPU
    driver or a bug raises (not a ConfigError/InspectdError). The old code let it out of run(): no drain, no
    PLC safe state."""
    d, t = running(tmp_path)
    try:
        before_cfg, before_rt = d.config, d.runtimes["disc-a"]

        def broken(*_a, **_k):  # type: ignore[no-untyped-def]
            raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")

        monkeypatch.setattr(inspectd.daemon, "build_runtime", broken)
        reload_and_wait(d, 1)
        assert d.reloads == {"applied": 0, "rejected": 1}
        assert d.config is before_cfg and d.runtimes["disc-a"] is before_rt and not before_rt.closed
        n = d.pipeline.stats.verdicts_total  # type: ignore[union-attr]
        wait_until(lambda: d.pipeline is not None and d.pipeline.stats.verdicts_total > n + 5, 30)
        assert t.is_alive()
        monkeypatch.undo()
        reload_and_wait(d, 2)  # and a good reload still applies
        assert d.reloads == {"applied": 1, "rejected": 1}
    finally:
        d.request_stop()
        t.join(60)
    assert d.exit_code == 0 and d.pipeline.stats.stage_errors == 0  # type: ignore[union-attr]


def test_sighup_to_a_nan_model_is_refused_and_the_old_model_keeps_judging(tmp_path: Path, supervised) -> None:
    good = brightness_model(tmp_path / "good.onnx")
    nan = odd_output_model(tmp_path / "nan.onnx", "nan")
    station = write_station(tmp_path, {"camera": {"bank": 8}}, model=good)
    product = tmp_path / "products" / "disc-a.yaml"
    recipe = product.read_text()
    notify, daemon = supervised(station, watchdog_usec=4_000_000)
    assert notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0), daemon.stderr()
    ready = daemon.wait_event("ready", 10)
    assert ready is not None
    product.write_text(recipe.replace(str(good), str(nan)))
    mark = len(notify.messages)
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_event("reload_rejected", 60)
    assert rejected is not None, daemon.stderr()[-2000:]
    assert rejected["problems"] == ["product 'disc-a': model nan.onnx: self-check on an all-zero input: output "
                                    "'logits' has 1 non-finite of 2 values (nan=1, inf=0)"]
    assert rejected["level"] == "error"
    t_rejected = time.time()
    seen = notify.wait_for(lambda m: parts_in_status(m) > parts_in_status(notify.messages[mark - 1]) + 5,
                           30, daemon.alive, since=mark)
    assert seen is not None  # still inspecting
    product.write_text(recipe)  # back to the good model: applies
    daemon.signal(signal.SIGHUP)
    assert daemon.wait_event("reloaded", 60) is not None
    assert daemon.wait_event("runtime_closed", 30) is not None  # the first model, once its parts drained
    daemon.signal(signal.SIGTERM)
    rc = daemon.wait(30)
    assert rc == 0, daemon.stderr()[-3000:]
    rows = journal_rows(tmp_path / "journal.sqlite")
    after = [r for r in rows if r["t_verdict"] > t_rejected]
    assert after and {r["verdict"] for r in after} <= {"pass", "reject"}  # judged by the old, finite model
    assert {r["model_sha256"] for r in rows} == {ready["model_sha256"]}
    closed = daemon.events("runtime_closed")
    assert len(closed) == 1  # the reload back to the good model retired the first runtime; the refused one
    # was closed when it was refused (never retired), so nothing leaks


def _wait_mapped(proc: subprocess.Popen[str], name: str, timeout: float = 30) -> None:
    """Until a file whose path contains `name` is mapped into the starting daemon (it is that far into start-up),
    polled closely; or until it exits or `timeout` passes (the test's own checks then say what went wrong)."""
    maps = Path(f"/proc/{proc.pid}/maps")
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        try:
            if name in maps.read_text():
                return
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.001)


def test_no_signal_during_start_up_kills_the_daemon(tmp_path: Path) -> None:
    """SIGHUPs from the moment the interpreter has loaded numpy (the old code installed its handlers only after
    loading the whole config, and died of the default action: status 129) until READY; then SIGTERM."""
    station = write_station(tmp_path, {"camera": {"bank": 8}})
    proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    sent = 0
    try:
        _wait_mapped(proc, "_multiarray_umath")  # numpy mapped: well into the imports
        end = time.monotonic() + START_S
        while proc.poll() is None and time.monotonic() < end and not any('"event": "ready"' in ln for ln in out):
            proc.send_signal(signal.SIGHUP)
            sent += 1
            time.sleep(0.05)
        assert proc.poll() is None, f"died with {proc.returncode} after {sent} SIGHUPs: {proc.stderr.read()[-2000:]}"  # type: ignore[union-attr]
        assert sent >= 2
        end = time.monotonic() + 60
        while not any('"event": "reloaded"' in ln for ln in out) and time.monotonic() < end:
            time.sleep(0.05)  # the requests made while starting are acted on once up: one reload, not one each
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(5)
    events = [json.loads(ln) for ln in out if ln.startswith("{")]
    assert rc == 0
    assert [e["event"] for e in events].count("ready") == 1
    assert 1 <= [e["event"] for e in events].count("reloaded") < sent


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_while_models_load_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    """A stop asked for while starting is not lost: the daemon comes up, drains and exits 0."""
    station = write_station(tmp_path, {"camera": {"bank": 8}})
    proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_mapped(proc, "onnxruntime")  # the model is loading
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err[-2000:]
    names = [json.loads(ln)["event"] for ln in out.splitlines() if ln.startswith("{")]
    assert "stopped" in names and "cannot_start" not in names


def test_the_reload_counter_is_exported(tmp_path: Path, monkeypatch) -> None:
    from tests.test_metrics import get, samples

    d, t = running(tmp_path, metrics={"enabled": True, "port": 0})
    try:
        reload_and_wait(d, 1)
        monkeypatch.setattr(inspectd.daemon, "load_config", lambda _p: 1 / 0)
        reload_and_wait(d, 2)
        assert d.metrics is not None and d.metrics.server is not None
        s = samples(get(f"http://127.0.0.1:{d.metrics.server.port}/metrics")[1].decode())
    finally:
        d.request_stop()
        t.join(60)
    assert s[("inspectd_reloads_total", (("result", "applied"),))] == 1
    assert s[("inspectd_reloads_total", (("result", "rejected"),))] == 1


def test_an_exception_in_the_main_loop_still_drains_every_part(tmp_path: Path) -> None:
    """Fault injection: a step of the main loop raises. The old loop let it out of run() with the pipeline, the
    journal and the PLC link left running; now the parts in flight get their verdicts and rows, exit 1."""
    d, t = running(tmp_path)

    def broken() -> None:
        raise RuntimeError("injected: a bug in a main-loop step")

    d._close_drained = broken  # type: ignore[method-assign]
    t.join(60)
    assert not t.is_alive() and d.exit_code == 1
    stats = d.pipeline.stats  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        seqs = [s for (s,) in db.execute("SELECT seq FROM verdicts ORDER BY seq")]
    assert seqs == list(range(1, stats.parts_in + 1)) and stats.verdicts_total == stats.parts_in > 5


def test_an_unexpected_exception_at_start_exits_1_after_an_ordered_shutdown(tmp_path: Path, monkeypatch) -> None:
    """Fault injection: opening the source raises what a driver raises (not an InspectdError): run() returns 1,
    having closed what it opened (the models, the PLC link) instead of letting the exception out."""
    d = Daemon(load_config(write_station(tmp_path, {"camera": {"bank": 4}})), Options(handle_signals=False))

    def broken(_cfg):  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(inspectd.daemon, "make_source", broken)
    assert d.run() == 1
    assert d.runtimes and all(rt.closed for rt in d.runtimes.values())
    assert d.pipeline is None
