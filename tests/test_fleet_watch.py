"""tools/fleet_watch.py against a real Mosquitto: per-station yield and reasons, QoS 1 duplicates counted once."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.mqtt_peers import Mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from fleet_watch import FleetWatch  # tools/ is not a package: imported by path


def _verdict(seq: int, verdict: str, reason: str = "") -> bytes:
    return json.dumps({"run_id": "r1", "seq": seq, "verdict": verdict, "reason": reason, "latency_ms": 3.0,
                       "t_verdict": time.time()}).encode()


def test_fleet_watch_tallies_each_station_and_drops_duplicates(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    watch = FleetWatch("127.0.0.1", broker.port).start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="stations", protocol=paho.MQTTv311)
    try:
        end = time.monotonic() + 20
        while not watch.client.is_connected() and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.5)  # subscribed
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        sent = [("line1", _verdict(1, "pass")), ("line1", _verdict(2, "reject", "scratch")),
                ("line1", _verdict(2, "reject", "scratch")),  # a QoS 1 redelivery
                ("line1", _verdict(3, "failsafe", "deadline")), ("line1", _verdict(4, "pass")),
                ("line2", _verdict(1, "reject", "chip")), ("line2", _verdict(2, "pass"))]
        for station, body in sent:
            pub.publish(f"inspectd/{station}/verdict", body, qos=1).wait_for_publish(10)
        pub.publish("inspectd/line2/state", "offline", qos=1, retain=True).wait_for_publish(10)
        end = time.monotonic() + 20
        while sum(t.get("parts", 0) for t in watch.summary().values()) < 6 and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.3)
        s = watch.summary()
        assert s["line1"]["parts"] == 4 and s["line1"]["duplicates"] == 1
        assert s["line1"]["yield_pct"] == 50.0
        assert s["line1"]["rejects"] == {"scratch": 1} and s["line1"]["failsafes"] == {"deadline": 1}
        assert s["line2"]["parts"] == 2 and s["line2"]["rejects"] == {"chip": 1} and s["line2"]["state"] == "offline"
        table = watch.table()
        assert "line1" in table and "50.0%" in table and "scratch: 1" in table
    finally:
        pub.loop_stop()
        pub.disconnect()
        watch.stop()
        broker.stop()
