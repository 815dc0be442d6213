"""Real signals to the daemon as a subprocess: SIGTERM drains and loses no part; SIGHUP reloads or keeps the old one."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml

from tests.conftest import write_station
from tests.supervise_harness import START_S, DaemonProcess, Message, NotifySocket, journal_rows, parts_in_status


def _serving(notify: NotifySocket, daemon: DaemonProcess, more_than: int, since: int | None = None) -> Message:
    """A STATUS= showing more than `more_than` parts: the line is still inspecting."""
    msg = notify.wait_for(lambda m: m.has("STATUS") and parts_in_status(m) > more_than, 15, daemon.alive, since)
    assert msg is not None, f"no parts beyond {more_than}; stderr: {daemon.stderr()[-2000:]}"
    return msg


def test_sigterm_drains_every_part_in_flight(tmp_path: Path, supervised) -> None:
    # As fast as the pipeline goes, two parts admitted at a time: whenever the signal lands, parts are in flight.
    station = write_station(tmp_path, {"camera": {"bank": 8, "rate_hz": None}, "pipeline": {"max_in_flight": 2}})
    notify, daemon = supervised(station, watchdog_usec=4_000_000)
    assert notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0), daemon.stderr()
    _serving(notify, daemon, 0)
    t_term = time.time()
    daemon.signal(signal.SIGTERM)
    rc = daemon.wait(30)  # TimeoutStopSec in the unit
    notify.settle()

    assert rc == 0, daemon.stderr()[-3000:]
    [stopped] = daemon.events("stopped")
    rows = journal_rows(tmp_path / "journal.sqlite")
    # Every part taken got exactly one verdict and one journal row, numbered without gaps.
    assert stopped["parts_in"] == stopped["verdicts"] == stopped["journaled"] == len(rows) > 0
    assert stopped["journal_dropped"] == 0
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["verdict"] for r in rows} <= {"pass", "reject", "failsafe"}
    # Parts in flight at the signal were finished, not dropped: their verdicts came after it.
    assert any(r["t_verdict"] > t_term for r in rows)
    assert any(m.has("STOPPING") for m in notify.messages)


def test_sighup_rejects_a_broken_config_keeps_serving_then_applies_a_valid_one(tmp_path: Path, supervised) -> None:
    station = write_station(tmp_path, {"camera": {"bank": 8}})
    product_file = tmp_path / "products" / "disc-a.yaml"
    good_station, good_product = station.read_text(), product_file.read_text()
    notify, daemon = supervised(station, watchdog_usec=4_000_000)

    def reload_and_wait() -> None:
        mark = len(notify.messages)
        daemon.signal(signal.SIGHUP)
        reloading = notify.wait_for(lambda m: m.has("RELOADING"), 30, daemon.alive, since=mark)
        assert reloading is not None and int(reloading.get("MONOTONIC_USEC") or 0) > 0
        assert notify.wait_for(lambda m: m.has("READY"), 30, daemon.alive, since=mark), "no READY=1 after reload"

    assert notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0), daemon.stderr()
    _serving(notify, daemon, 0)

    # 1. A misspelt station key: rejected with file:line: key, the old config keeps running.
    station.write_text(good_station + "cycle_budget_mss: 10\n")
    typo_line = len(good_station.splitlines()) + 1
    reload_and_wait()
    rejected = daemon.wait_event("reload_rejected", 10)
    assert rejected is not None
    want = f"{station}:{typo_line}: cycle_budget_mss: unknown key (misspelt?)"
    assert any(p.startswith(want) for p in rejected["problems"]), rejected["problems"]  # (+ "did you mean")
    served = _serving(notify, daemon, parts_in_status(notify.messages[-1]))
    assert "product=disc-a" in (served.get("STATUS") or "")

    # 2. A product recipe with a bad value: same.
    station.write_text(good_station)
    recipe = yaml.safe_load(good_product)
    recipe["rules"][0]["min_score"] = 2
    product_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    bad_line = next(i for i, line in enumerate(product_file.read_text().splitlines(), 1) if "min_score: 2" in line)
    reload_and_wait()
    rejected = daemon.wait_event("reload_rejected", 10, after=1)
    assert rejected is not None
    assert rejected["problems"] == [f"{product_file}:{bad_line}: rules[0].min_score: must be <= 1 for a "
                                    "classifier's probabilities (got 2); raw scores (logits) need "
                                    "model.activation: none"]
    _serving(notify, daemon, parts_in_status(notify.messages[-1]))
    assert daemon.events("reloaded") == []

    # 3. A valid change: a second product, and the station switches to it.
    product_file.write_text(good_product)
    recipe = yaml.safe_load(good_product)
    recipe.update(name="disc-b", plc_id=2)
    (tmp_path / "products" / "disc-b.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    st = yaml.safe_load(good_station)
    st["product"] = "disc-b"
    station.write_text(yaml.safe_dump(st, sort_keys=False))
    reload_and_wait()
    assert daemon.wait_event("reloaded", 10) is not None
    switched = notify.wait_for(lambda m: "product=disc-b" in (m.get("STATUS") or "") and parts_in_status(m) > 0,
                               15, daemon.alive)
    assert switched is not None

    daemon.signal(signal.SIGTERM)
    rc = daemon.wait(30)

    assert rc == 0, daemon.stderr()[-3000:]
    rows = journal_rows(tmp_path / "journal.sqlite")
    products = [r["product"] for r in rows]
    # The switch happened between parts, once: every part before it is disc-a, every part after it disc-b.
    first_b = products.index("disc-b")
    assert set(products[:first_b]) == {"disc-a"} and set(products[first_b:]) == {"disc-b"}
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert daemon.events("stopped")[0]["parts_in"] == len(rows)


def test_sigterm_leaves_the_plc_outputs_in_their_safe_state(tmp_path: Path, supervised) -> None:
    """pymodbus' client plays the PLC polling the daemon's Modbus server: online, then the shutdown state."""
    from pymodbus.client import ModbusTcpClient

    from inspectd.plc.layout import ErrorCode, Layout
    from tests.plc.peers import free_port, wait_port

    port = free_port()
    station = write_station(tmp_path, {"camera": {"bank": 8}, "plc": {
        "type": "modbus_server", "port": port, "linger_ms": 1500, "handshake": {"plc_heartbeat_ms": 0}}})
    notify, daemon = supervised(station, watchdog_usec=4_000_000)
    layout = Layout()
    seen = []
    wait_port(port, START_S)
    plc = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    assert plc.connect()

    def outputs():  # type: ignore[no-untyped-def]
        return layout.decode_b(plc.read_holding_registers(100, count=20, device_id=1).registers)

    assert notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0), daemon.stderr()
    end = time.monotonic() + 5
    # the link applies the daemon's set_ready on its own thread: STARTING (ONLINE, ERROR 6) may still be
    # showing for a poll or two after systemd was told READY
    while not ((o := outputs()).online and o.error_code == 0) and time.monotonic() < end:
        time.sleep(0.02)
    # Up and healthy. (READY itself also drops while results wait for an ACK this PLC never gives.)
    up = outputs()
    assert up.online and not up.error and up.error_code == 0
    _serving(notify, daemon, 0)

    daemon.signal(signal.SIGTERM)
    end = time.monotonic() + 30
    while time.monotonic() < end:  # poll like a PLC until the server goes away
        try:
            seen.append(outputs())
        except Exception:  # connection closed after the linger
            break
        time.sleep(0.02)
    plc.close()
    rc = daemon.wait(30)

    assert rc == 0, daemon.stderr()[-3000:]
    last = seen[-1]
    assert (last.ready, last.result_valid, last.online, last.error_code) == (False, False, False, ErrorCode.SHUTDOWN)
    [stopped] = daemon.events("stopped")
    assert stopped["parts_in"] == stopped["journaled"] == len(journal_rows(tmp_path / "journal.sqlite"))


def test_sigterm_while_starting_is_acted_on_once_up(tmp_path: Path, supervised) -> None:
    """A stop asked for while models load is not lost: start finishes, then the daemon drains and exits 0."""
    station = write_station(tmp_path, {"camera": {"bank": 8}})
    notify, daemon = supervised(station)
    # EXTEND_TIMEOUT_USEC is sent while each product loads: signal handlers are in place by then.
    assert notify.wait_for(lambda m: m.has("EXTEND_TIMEOUT_USEC"), START_S, daemon.alive, since=0)
    daemon.signal(signal.SIGTERM)
    rc = daemon.wait(60)
    notify.settle()
    assert rc == 0, daemon.stderr()[-3000:]
    assert any(m.has("STOPPING") for m in notify.messages)
    [stopped] = daemon.events("stopped")
    assert stopped["parts_in"] == stopped["journaled"] == len(journal_rows(tmp_path / "journal.sqlite"))
