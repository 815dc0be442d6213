"""MQTT store-and-forward against a real Mosquitto, with the daemon as a real subprocess.

Zero loss is checked against the journal: every journaled row reaches the subscriber (QoS 1 may duplicate,
never lose), whatever happens to the broker or the daemon in between.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from inspectd.outputs import sparkplug_schema as spb
from inspectd.outputs.mqtt import verdict_message
from tests.conftest import write_station
from tests.mqtt_peers import Mosquitto, Recorder, TlsFiles, make_test_ca
from tests.supervise_harness import START_S, DaemonProcess, journal_rows
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

FIELDS = {"run_id", "seq", "part_id", "product", "verdict", "reason", "result_code", "score", "scores",
          "t_trigger", "t_verdict", "latency_ms", "model_sha256", "station", "journal_id"}


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start a Mosquitto in tmp_path/broker (Mosquitto's own arguments); each is stopped after the test, thawed
    first should the test have left it frozen (SIGSTOP)."""
    started: list[Mosquitto] = []

    def start(**kw: Any) -> Mosquitto:
        started.append(Mosquitto(tmp_path / "broker", **kw).start())
        return started[-1]

    yield start
    for broker in started:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.signal(signal.SIGCONT)
        broker.stop()


@pytest.fixture
def broker(brokers: Callable[..., Mosquitto]) -> Mosquitto:
    return brokers()


@pytest.fixture
def recorders(brokers: Callable[..., Mosquitto]) -> Iterator[Callable[..., Recorder]]:
    """Recorder(port, topic=...), each closed after the test, before its broker stops."""
    made: list[Recorder] = []

    def record(port: int, **kw: Any) -> Recorder:
        made.append(Recorder(port, **kw))
        return made[-1]

    yield record
    for rec in made:
        rec.close()


@pytest.fixture
def rec(broker: Mosquitto, recorders: Callable[..., Recorder]) -> Recorder:
    return recorders(broker.port)


@pytest.fixture
def daemons(brokers: Callable[..., Mosquitto],
            recorders: Callable[..., Recorder]) -> Iterator[Callable[[Path], DaemonProcess]]:
    """DaemonProcess(station) each killed after the test (before the recorders close and the brokers stop)."""
    started: list[DaemonProcess] = []

    def start(station: Path) -> DaemonProcess:
        started.append(DaemonProcess(station, None))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()


def _stop_cleanly(daemon: DaemonProcess) -> None:
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0, daemon.stderr()[-3000:]


def _kill_9(daemon: DaemonProcess) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.wait(10)


def _station(tmp_path: Path, broker: Mosquitto, metrics: bool = False, **mqtt: object) -> Path:
    cfg = {"host": "127.0.0.1", "port": broker.port, "counters_every_s": 0.5, "drain_s": 20, **mqtt}
    return write_station(tmp_path, {"name": "line1", "camera": {"bank": 8, "rate_hz": 40}, "mqtt": cfg,
                                    "log": {"every_part": False}, "metrics": {"enabled": metrics, "port": 0}})


def _rows(tmp_path: Path) -> int:
    path = tmp_path / "journal.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(str(path))
    try:
        return int(db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def _wait(pred: Callable[[], object], timeout: float, what: str) -> None:
    wait_until(pred, timeout, what, every=0.05)


def _all_journaled_arrived(tmp_path: Path, rec: Recorder, timeout: float = 60) -> tuple[list[dict], list[dict]]:
    rows = journal_rows(tmp_path / "journal.sqlite")
    want = {r["id"] for r in rows}
    rec.wait(lambda: want <= {v["journal_id"] for v in rec.verdicts()}, timeout)
    got = rec.verdicts()
    missing = sorted(want - {v["journal_id"] for v in got})
    assert not missing, f"{len(missing)} of {len(want)} journaled verdicts never reached the broker: {missing[:20]}"
    return rows, got


def _first_arrivals_in_order(got: list[dict]) -> None:
    seen: list[int] = []
    for v in got:
        if v["journal_id"] not in seen:
            seen.append(v["journal_id"])
    assert seen == sorted(seen), "QoS 1 order broken: first arrivals are not in journal order"


def test_every_verdict_arrives_with_its_fields_state_and_counters(tmp_path: Path, broker: Mosquitto, rec: Recorder,
                                                                   daemons: Callable[[Path], DaemonProcess]) -> None:
    rec.wait(lambda: rec.client.is_connected(), 10)
    daemon = daemons(_station(tmp_path, broker))
    _wait(lambda: _rows(tmp_path) >= 80 or not daemon.alive(), START_S, "80 journaled parts")
    assert rec.wait(lambda: "online" in rec.states(), 10), rec.states()
    _stop_cleanly(daemon)
    rows, got = _all_journaled_arrived(tmp_path, rec)
    by_id = {r["id"]: r for r in rows}
    for v in got:
        assert set(v) >= FIELDS, FIELDS - set(v)
        r = by_id[v["journal_id"]]
        assert (v["run_id"], v["seq"], v["part_id"], v["verdict"], v["reason"], v["result_code"]) == \
            (r["run_id"], r["seq"], r["part_id"], r["verdict"], r["reason"], r["result_code"])
        assert v["station"] == "line1" and isinstance(v["scores"], dict)
    _first_arrivals_in_order(got)
    # A clean stop says `offline` itself (retained), after the last verdict went out.
    assert rec.wait(lambda: rec.states()[-1:] == ["offline"], 10), rec.states()
    counters = rec.counters()
    assert counters and counters[-1]["station"] == "line1" and counters[-1]["parts"] > 0
    assert {"pass", "reject", "failsafe", "yield", "product"} <= set(counters[-1])


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(inspectd_mqtt_\w+)(\{[^}]*\})? ([-0-9.e+]+)$", line)
        if m and not m.group(2):
            out[m.group(1)] = float(m.group(3))
    return out


def test_broker_stopped_mid_run_and_restarted_loses_nothing(tmp_path: Path, broker: Mosquitto, rec: Recorder,
                                                             daemons: Callable[[Path], DaemonProcess]) -> None:
    daemon = daemons(_station(tmp_path, broker, metrics=True))
    listening = daemon.wait_event("metrics_listening", START_S)
    assert listening, daemon.stderr()[-3000:]
    port = listening["port"]
    assert rec.wait(lambda: len(rec.verdicts()) >= 20, START_S), daemon.stderr()[-3000:]
    broker.stop()
    stopped, before = time.monotonic(), _rows(tmp_path)
    _wait(lambda: _rows(tmp_path) >= before + 100 and time.monotonic() - stopped >= 5, 60,
          "5 s and 100 parts journaled while the broker is down")
    during = _scrape(port)
    assert during["inspectd_mqtt_connected"] == 0
    assert during["inspectd_mqtt_backlog_rows"] >= 50 and during["inspectd_mqtt_backlog_age_seconds"] > 0
    assert during["inspectd_mqtt_publish_latency_seconds_count"] == during["inspectd_mqtt_published_total"] >= 20
    broker.start()
    assert rec.wait(lambda: len({v["journal_id"] for v in rec.verdicts()}) >= before + 100, 60)
    _stop_cleanly(daemon)
    _, got = _all_journaled_arrived(tmp_path, rec)
    _first_arrivals_in_order(got)
    assert daemon.events("mqtt_disconnected") and len(daemon.events("mqtt_connected")) >= 2


def test_daemon_killed_and_restarted_while_broker_down_loses_nothing(tmp_path: Path, broker: Mosquitto,
                                                                     rec: Recorder,
                                                                     daemons: Callable[[Path], DaemonProcess]) -> None:
    station = _station(tmp_path, broker)
    first = daemons(station)
    assert rec.wait(lambda: len(rec.verdicts()) >= 20, START_S), first.stderr()[-3000:]
    broker.stop()
    before = _rows(tmp_path)
    _wait(lambda: _rows(tmp_path) >= before + 40, 60, "parts journaled while the broker is down")
    _kill_9(first)
    killed_at = _rows(tmp_path)
    second = daemons(station)
    _wait(lambda: _rows(tmp_path) >= killed_at + 40, START_S, "the restarted daemon journaling, broker down")
    broker.start()
    run_ids = {r["run_id"] for r in journal_rows(tmp_path / "journal.sqlite")}
    assert len(run_ids) == 2
    _stop_cleanly(second)
    _, got = _all_journaled_arrived(tmp_path, rec)
    _first_arrivals_in_order(got)
    assert {v["run_id"] for v in got} == run_ids


def _cursor(tmp_path: Path) -> int:
    path = tmp_path / "journal.sqlite.mqtt-cursor"
    return int(json.loads(path.read_text())["last_id"]) if path.exists() else 0


def test_cursor_waits_for_puback_sent_but_unacknowledged_verdicts_are_resent(
        tmp_path: Path, broker: Mosquitto, rec: Recorder, daemons: Callable[[Path], DaemonProcess]) -> None:
    """A frozen broker (SIGSTOP) takes the messages into its socket but acknowledges none: the cursor must not
    move past them. Then the daemon is killed and the broker too, so whatever was only in flight is gone; the
    restarted daemon must send it again."""
    station = _station(tmp_path, broker)
    first = daemons(station)
    assert rec.wait(lambda: len(rec.verdicts()) >= 20, START_S), first.stderr()[-3000:]
    time.sleep(1.0)  # let the recorder's session reach the broker's autosave
    broker.signal(signal.SIGSTOP)
    time.sleep(0.5)  # the cursor file catches up with the last PUBACK (saved every 0.2 s)
    frozen_at, before = _cursor(tmp_path), _rows(tmp_path)
    _wait(lambda: _rows(tmp_path) >= before + 60, 60, "parts journaled while the broker is frozen")
    assert _cursor(tmp_path) == frozen_at, "the cursor moved without a PUBACK"
    _kill_9(first)
    broker.kill()
    broker.start()
    second = daemons(station)
    _wait(lambda: _rows(tmp_path) >= before + 100, START_S, "the restarted daemon journaling")
    _stop_cleanly(second)
    _all_journaled_arrived(tmp_path, rec)


def test_silent_broker_is_detected_by_keepalive_and_nothing_is_lost(
        tmp_path: Path, broker: Mosquitto, rec: Recorder, daemons: Callable[[Path], DaemonProcess]) -> None:
    """A network cut without a reset looks like a broker that stops answering: SIGSTOP it for longer than the
    keep-alive. The publisher must notice (disconnect), keep journaling, and send everything once it answers."""
    daemon = daemons(_station(tmp_path, broker, keepalive_s=2))
    assert rec.wait(lambda: len(rec.verdicts()) >= 20, START_S), daemon.stderr()[-3000:]
    broker.signal(signal.SIGSTOP)
    assert daemon.wait_event("mqtt_disconnected", 30), "the silent broker was not detected"
    before = _rows(tmp_path)
    _wait(lambda: _rows(tmp_path) >= before + 40, 60, "parts journaled while the broker is silent")
    broker.signal(signal.SIGCONT)
    assert daemon.wait_event("mqtt_connected", 60, after=1), "no reconnect after the broker answered again"
    _stop_cleanly(daemon)
    _, got = _all_journaled_arrived(tmp_path, rec)
    _first_arrivals_in_order(got)


def test_last_will_offline_on_kill_9(tmp_path: Path, broker: Mosquitto, rec: Recorder,
                                     recorders: Callable[..., Recorder],
                                     daemons: Callable[[Path], DaemonProcess]) -> None:
    daemon = daemons(_station(tmp_path, broker))
    assert rec.wait(lambda: rec.states()[-1:] == ["online"], START_S), daemon.stderr()[-3000:]
    assert rec.wait(lambda: len(rec.verdicts()) >= 5, 30)
    _kill_9(daemon)
    # The broker publishes the Will when the connection drops without a DISCONNECT.
    assert rec.wait(lambda: rec.states()[-1:] == ["offline"], 30), rec.states()
    late = recorders(broker.port, topic="inspectd/line1/state")  # a newcomer reads it retained
    assert late.wait(lambda: late.states() == ["offline"], 10), late.states()


def test_tls_with_a_test_ca_client_certificate_and_password(tmp_path: Path, brokers: Callable[..., Mosquitto],
                                                             recorders: Callable[..., Recorder],
                                                             daemons: Callable[[Path], DaemonProcess]) -> None:
    tls = make_test_ca(tmp_path / "ca")
    broker = brokers(tls=tls, users={"line1": "pw-line1"})
    rec = recorders(broker.port)  # the plain loopback listener: the test's view of what arrived
    (tmp_path / "mqtt-password").write_text("pw-line1\n")
    station = _station(tmp_path, broker, port=broker.tls_port, username="line1",
                       password_file=str(tmp_path / "mqtt-password"),
                       tls={"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)})
    daemon = daemons(station)
    assert rec.wait(lambda: len(rec.verdicts()) >= 20, START_S), daemon.stderr()[-3000:]
    _stop_cleanly(daemon)
    _all_journaled_arrived(tmp_path, rec)
    # The broker really demands all three: no client certificate, or a wrong password, is refused.
    assert _broker_answer(broker.tls_port, tls, cert=False, password="pw-line1") != "accepted"
    assert _broker_answer(broker.tls_port, tls, cert=True, password="wrong") == "refused"
    assert _broker_answer(broker.tls_port, tls, cert=True, password="pw-line1") == "accepted"  # the probe works


def _broker_answer(port: int, tls: TlsFiles, cert: bool, password: str) -> str:
    """What the TLS listener says to a client: accepted, refused (CONNACK), dropped or handshake failed."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{cert}-{password}", protocol=paho.MQTTv311)
    c.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert) if cert else None,
              keyfile=str(tls.client_key) if cert else None)
    c.username_pw_set("line1", password)
    outcome: list[str] = []
    done = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p=None: (outcome.append("refused" if rc.is_failure else "accepted"), done.set())
    c.on_disconnect = lambda cl, u, f, rc, p=None: (outcome.append("dropped"), done.set())
    try:
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        assert done.wait(20), "no answer from the broker"
    except (OSError, ssl.SSLError):  # the TLS handshake fails without a client certificate
        outcome.append("handshake failed")
    finally:
        c.loop_stop()
        c.disconnect()
    return outcome[0]


def test_sparkplug_b_births_data_rebirth_and_death_on_kill_9(tmp_path: Path, broker: Mosquitto,
                                                              recorders: Callable[..., Recorder],
                                                              daemons: Callable[[Path], DaemonProcess]) -> None:
    spb_rec = recorders(broker.port, topic="spBv1.0/#")
    daemon = daemons(_station(tmp_path, broker, sparkplug={"group_id": "plant1", "update_ms": 100}))

    def decoded(kind: str) -> list:
        out = []
        for _, topic, payload, _ in list(spb_rec.messages):
            if topic.split("/")[2] == kind:
                p = spb.Payload()
                p.ParseFromString(payload)
                out.append((topic, p, {m.name: spb.metric_value(m) for m in p.metrics}))
        return out

    assert spb_rec.wait(lambda: len(decoded("DDATA")) >= 5, START_S), daemon.stderr()[-3000:]
    [(nb_topic, nb, nb_metrics)] = decoded("NBIRTH")
    assert nb_topic == "spBv1.0/plant1/NBIRTH/line1" and nb.seq == 0
    assert nb_metrics["Node Control/Rebirth"] is False and "bdSeq" in nb_metrics
    [(db_topic, db, db_metrics)] = decoded("DBIRTH")
    assert db_topic == "spBv1.0/plant1/DBIRTH/line1/inspection" and db.seq == 1
    assert {"PartsTotal", "RejectsTotal", "FailsafesTotal", "LastVerdict", "LastPartId", "LastScore",
            "ActiveRecipe", "Ready"} <= set(db_metrics)
    assert db_metrics["ActiveRecipe"] == "disc-a"
    data = decoded("DDATA")
    # seq runs on from the DBIRTH by one per message (mod 256); PartsTotal only grows
    assert [p.seq for _, p, _ in data] == [(2 + i) % 256 for i in range(len(data))]
    parts = [m["PartsTotal"] for _, _, m in data if "PartsTotal" in m]
    assert parts == sorted(parts) and parts[-1] > 0
    # A host asks for a rebirth: NBIRTH (seq 0) and DBIRTH again.
    cmd = spb.Payload(timestamp=int(time.time() * 1e3))
    spb.add_metric(cmd, "Node Control/Rebirth", spb.BOOLEAN, True, cmd.timestamp)
    spb_rec.client.publish("spBv1.0/plant1/NCMD/line1", cmd.SerializeToString(), qos=1)
    assert spb_rec.wait(lambda: len(decoded("NBIRTH")) == 2 and len(decoded("DBIRTH")) == 2, 30)
    # A new MQTT session (broker restarted): births again, with the next bdSeq.
    broker.stop()
    broker.start()
    assert spb_rec.wait(lambda: len(decoded("NBIRTH")) == 3, 60), [t for _, t, _, _ in spb_rec.messages][-5:]
    latest = decoded("NBIRTH")[-1][2]
    assert latest["bdSeq"] == (nb_metrics["bdSeq"] + 1) % 256
    # kill -9: the broker sends NDEATH (the Will) with the bdSeq of the session's NBIRTH.
    _kill_9(daemon)
    # (The broker's own restart sent the first session's Will: an NDEATH with the first bdSeq.)
    deaths = lambda: [m["bdSeq"] for _, _, m in decoded("NDEATH")]  # noqa: E731
    assert spb_rec.wait(lambda: latest["bdSeq"] in deaths(), 30), deaths()
    assert set(deaths()) == {nb_metrics["bdSeq"], latest["bdSeq"]}


def test_verdict_message_is_strict_json_with_every_column() -> None:
    row = {"id": 7, "run_id": "r", "seq": 3, "score": float("nan"), "scores": {"good": float("inf"), "bad": 0.5},
           "stage_ms": {"infer": 1.5}, "new_column": "kept"}
    msg = verdict_message("line9", row)
    assert msg == {"station": "line9", "journal_id": 7, "run_id": "r", "seq": 3, "score": None,
                   "scores": {"good": None, "bad": 0.5}, "stage_ms": {"infer": 1.5}, "new_column": "kept"}
    json.dumps(msg, allow_nan=False)
