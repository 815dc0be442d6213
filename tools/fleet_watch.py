"""Watch many stations from one place: subscribe to `<prefix>/+/verdict|state|counters` on the plant broker and
show yield and reject reasons per station, live.

    python tools/fleet_watch.py --host broker.plant --port 8883 --ca ca.pem [--cert c.pem --key c.key] \
        [--user u --password-file f] [--seconds 60] [--json]

A persistent session (clean_session off, QoS 1) keeps what arrives while the watcher reconnects. QoS 1 can
deliver a verdict twice: counts are by (station, run_id, seq), so a duplicate is counted once.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class StationTally:
    state: str = "?"
    parts: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    failsafes: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    latency_ms: list[float] = field(default_factory=list)  # trigger -> verdict, from the payload
    broker_lag_ms: list[float] = field(default_factory=list)  # verdict -> arrival here (same host clock only)
    counters: dict[str, Any] = field(default_factory=dict)
    seen: set[tuple[str, int]] = field(default_factory=set)

    @property
    def yield_pct(self) -> float | None:
        return 100.0 * self.verdicts["pass"] / self.parts if self.parts else None


class FleetWatch:
    def __init__(self, host: str, port: int, prefix: str = "inspectd", tls: dict[str, str] | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.prefix = prefix
        self.stations: dict[str, StationTally] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-watch-{uuid.uuid4().hex[:8]}",
                                  clean_session=False, protocol=paho.MQTTv311)
        if tls is not None:
            self.client.tls_set(ca_certs=tls.get("ca"), certfile=tls.get("cert"), keyfile=tls.get("key"))
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.5, 5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async(host, port, keepalive=10)

    def start(self) -> FleetWatch:
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if not rc.is_failure:
            client.subscribe([(f"{self.prefix}/+/{t}", 1) for t in ("verdict", "state", "counters")])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.time()
        parts = msg.topic.split("/")
        if len(parts) != 3:
            return
        station, kind = parts[1], parts[2]
        with self.lock:
            t = self.stations.setdefault(station, StationTally())
            if kind == "state":
                t.state = msg.payload.decode(errors="replace")
            elif kind == "counters":
                t.counters = json.loads(msg.payload)
            elif kind == "verdict":
                v = json.loads(msg.payload)
                key = (v["run_id"], int(v["seq"]))
                if key in t.seen:
                    t.duplicates += 1
                    return
                t.seen.add(key)
                t.parts += 1
                t.verdicts[v["verdict"]] += 1
                if v["verdict"] == "reject":
                    t.rejects[v["reason"]] += 1
                elif v["verdict"] == "failsafe":
                    t.failsafes[v["reason"]] += 1
                t.latency_ms.append(float(v["latency_ms"]))
                t.broker_lag_ms.append((now - float(v["t_verdict"])) * 1e3)

    def table(self) -> str:
        rows = [f"{'station':<10} {'state':<8} {'parts':>6} {'yield':>7}  {'rejects (reason: n)':<34} "
                f"{'fail-safes (reason: n)':<26} {'dup':>4}"]
        with self.lock:
            for name in sorted(self.stations):
                t = self.stations[name]
                y = f"{t.yield_pct:.1f}%" if t.yield_pct is not None else "-"
                rej = ", ".join(f"{r}: {n}" for r, n in t.rejects.most_common()) or "-"
                fs = ", ".join(f"{r}: {n}" for r, n in t.failsafes.most_common()) or "-"
                rows.append(f"{name:<10} {t.state:<8} {t.parts:>6} {y:>7}  {rej:<34} {fs:<26} {t.duplicates:>4}")
        return "\n".join(rows)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {name: {"state": t.state, "parts": t.parts, "yield_pct": t.yield_pct, "rejects": dict(t.rejects),
                           "failsafes": dict(t.failsafes), "duplicates": t.duplicates,
                           "broker_lag_ms_p50": _pct(t.broker_lag_ms, 50),
                           "broker_lag_ms_p99": _pct(t.broker_lag_ms, 99)}
                    for name, t in sorted(self.stations.items())}


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, max(0, int(len(s) * p / 100 + 0.5) - 1))], 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--prefix", default="inspectd")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user")
    ap.add_argument("--password-file")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    ap.add_argument("--every", type=float, default=2.0, help="table refresh period, seconds")
    ap.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    a = ap.parse_args(argv)
    tls = {"ca": a.ca, "cert": a.cert, "key": a.key} if a.ca else None
    password = Path(a.password_file).read_text().strip() if a.password_file else None
    watch = FleetWatch(a.host, a.port, a.prefix, tls, a.user, password).start()
    end = time.monotonic() + a.seconds if a.seconds else None
    try:
        while end is None or time.monotonic() < end:
            time.sleep(a.every)
            print(f"\n{time.strftime('%H:%M:%S')}\n{watch.table()}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        watch.stop()
    if a.json:
        print(json.dumps(watch.summary(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
