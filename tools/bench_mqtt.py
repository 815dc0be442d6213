"""MQTT figures against a real Mosquitto on loopback (the broker and a subscriber run on the same host):

1. cost on the cycle: the daemon (journal and all sinks, in-process) as fast as it goes, without and with `mqtt:`,
   alternating rounds in one run; throughput and trigger->verdict p50/p99 from the journal;
2. verdict -> broker latency at a line rate: PUBACK time minus verdict time (the publisher's histogram) and the
   time the verdict reached a subscriber through the broker (exact, same clock);
3. backlog drain rate: a journal filled while the broker is "down" (no publisher), then the publisher started:
   rows per second until the broker acknowledged the last one and the subscriber has them all.

    python tools/bench_mqtt.py [--parts 1500] [--rounds 2] [--rate-hz 50] [--latency-parts 1000] [--backlog 20000]

Needs the Debian packages mosquitto and mosquitto-clients (mosquitto_sub). --latency-parts 0 / --backlog 0 skip
those parts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from inspectd.config.load import load_config  # noqa: E402 (after the path fix above)
from inspectd.daemon import Daemon, Options  # noqa: E402
from inspectd.journal import Journal  # noqa: E402
from inspectd.outputs.config import MqttConfig  # noqa: E402
from inspectd.outputs.mqtt import MqttPublisher  # noqa: E402
from inspectd.types import Outcome, Verdict  # noqa: E402
from tests.conftest import write_station  # noqa: E402
from tests.mqtt_peers import Mosquitto  # noqa: E402

WARMUP = 50


class SubRecorder:
    """mosquitto_sub in its own process (as a plant consumer is), stamping each message with its arrival time."""

    def __init__(self, port: int, topic: str, out: Path) -> None:
        self.out = out
        self._f = out.open("w")
        self.proc = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", topic, "-F", "%U|%p"],
                                     stdout=self._f, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # subscribed before the first verdict (a missed one would show in `received`)

    def arrivals(self) -> dict[tuple[str, int], tuple[float, dict]]:
        got: dict[tuple[str, int], tuple[float, dict]] = {}
        for line in self.out.read_text().splitlines():
            t, _, payload = line.partition("|")
            with contextlib.suppress(ValueError):
                v = json.loads(payload)
                got.setdefault((v["run_id"], v["seq"]), (float(t), v))
        return got

    def wait(self, want: set[tuple[str, int]], timeout: float) -> dict[tuple[str, int], tuple[float, dict]]:
        end = time.monotonic() + timeout
        while not want <= set(got := self.arrivals()) and time.monotonic() < end:
            time.sleep(0.2)
        return got

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._f.close()


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 2) if xs else float("nan")


def run_daemon(folder: Path, parts: int, mqtt_port: int | None, rate_hz: float | None,
               rec: SubRecorder | None = None) -> dict:
    station: dict = {"name": "bench", "camera": {"bank": 64, "rate_hz": rate_hz}, "log": {"every_part": False},
                     "archive": {"enabled": False}, "pipeline": {"max_in_flight": 2, "overflow": "block"}}
    if mqtt_port is not None:
        station["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "drain_s": 60}
    cfg = load_config(write_station(folder, station))
    d = Daemon(cfg, Options(handle_signals=False, max_parts=parts + WARMUP))
    cpu0 = sum(psutil.Process().cpu_times()[:2])
    t = threading.Thread(target=d.run)
    t.start()
    t.join(900)
    cpu_s = sum(psutil.Process().cpu_times()[:2]) - cpu0  # this process: the daemon's threads (broker apart)
    db = sqlite3.connect(str(folder / "journal.sqlite"))
    rows = db.execute("SELECT run_id, seq, t_trigger, t_verdict, latency_ms FROM verdicts ORDER BY seq").fetchall()
    db.close()
    measured = rows[WARMUP:]
    span = max(r[3] for r in measured) - min(r[2] for r in measured)
    out = {"mqtt": mqtt_port is not None, "parts": len(measured), "fps": round(len(measured) / span, 1),
           "cpu_ms_per_part": round(cpu_s * 1e3 / len(rows), 3),
           "cycle_p50_ms": pct([r[4] for r in measured], 50), "cycle_p99_ms": pct([r[4] for r in measured], 99)}
    if rec is not None:
        want = {(r[0], r[1]) for r in rows}
        arrivals = {k: (t - v["t_verdict"]) * 1e3 for k, (t, v) in rec.wait(want, 120).items()}
        lag = [arrivals[(r[0], r[1])] for r in measured if (r[0], r[1]) in arrivals]
        out.update(received=f"{len(want & set(arrivals))}/{len(want)}", to_subscriber_p50_ms=pct(lag, 50),
                   to_subscriber_p99_ms=pct(lag, 99), to_subscriber_max_ms=pct(lag, 100))
        mqtt = d.plant.mqtt if d.plant else None
        if mqtt is not None:
            out["puback_le_ms"] = _histogram_shares(mqtt)
    return out


def _histogram_shares(pub: MqttPublisher) -> dict[str, float]:
    """Share of verdicts whose PUBACK came within each bucket bound (from the publisher's own histogram)."""
    samples = {s.labels["le"]: s.value for m in pub.latency.collect() for s in m.samples if s.name.endswith("_bucket")}
    total = samples.get("+Inf", 0) or 1
    return {f"{float(le) * 1e3:g}": round(n / total, 4) for le, n in samples.items() if le != "+Inf"
            and float(le) <= 0.1}


def drain(folder: Path, broker: Mosquitto, n: int) -> dict:
    """Fill a journal with `n` verdicts while nothing publishes, then time the publisher's catch-up."""
    path = folder / "journal.sqlite"
    j = Journal(path, batch=500)
    j.start()
    now = time.time()
    for i in range(1, n + 1):
        j.submit(Verdict(seq=i, part_id=i, product="disc-a", outcome=Outcome.PASS, reason="", result_code=0,
                         plc_ok=True, score=0.01, scores={"good": 0.99, "defect": 0.01}, t_trigger=0.0,
                         t_verdict=0.002, truth=None, model_sha256="0" * 64, stage_ms={"infer": 1.0},
                         wall_time=now))
    j.close()
    rec = SubRecorder(broker.port, "inspectd/drain/verdict", folder / "sub.txt")
    registry = CollectorRegistry()
    pub = MqttPublisher(MqttConfig(host="127.0.0.1", port=broker.port), "drain", path, registry=registry)
    t0 = time.monotonic()
    pub.start()
    while pub.cursor.last_id < n and time.monotonic() - t0 < 600:
        time.sleep(0.01)
    acked = time.monotonic() - t0
    got = len(rec.wait({(j.run_id, i) for i in range(1, n + 1)}, 120))
    received = time.monotonic() - t0
    pub.close()
    rec.close()
    return {"rows": n, "acked_s": round(acked, 2), "acked_rows_per_s": round(n / acked),
            "all_received_s": round(received, 2), "received": f"{got}/{n}",
            "max_inflight": pub.cfg.max_inflight}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=1500, help="parts per throughput round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds without and with MQTT, alternating")
    ap.add_argument("--rate-hz", type=float, default=50, help="line rate of the latency run")
    ap.add_argument("--latency-parts", type=int, default=1000)
    ap.add_argument("--backlog", type=int, default=20000, help="rows in the drain run")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        base = Path(tmp)
        broker = Mosquitto(base / "broker").start()
        try:
            rounds = []
            for r in range(a.rounds):
                for with_mqtt in (False, True):
                    folder = base / f"tp{r}{int(with_mqtt)}"
                    rec = SubRecorder(broker.port, "inspectd/bench/verdict", base / f"sub{r}.txt") if with_mqtt \
                        else None
                    res = run_daemon(folder, a.parts, broker.port if with_mqtt else None, None, rec)
                    if rec:
                        rec.close()
                    print(json.dumps(res), flush=True)
                    rounds.append(res)
            latency: dict = {}
            if a.latency_parts:
                rec = SubRecorder(broker.port, "inspectd/bench/verdict", base / "sub-lat.txt")
                latency = run_daemon(base / "lat", a.latency_parts, broker.port, a.rate_hz, rec)
                rec.close()
                latency["rate_hz"] = a.rate_hz
                print(json.dumps(latency), flush=True)
            dr = drain(base / "drain", broker, a.backlog) if a.backlog else {}
            print(json.dumps(dr), flush=True)
        finally:
            broker.stop()
    off = [r["fps"] for r in rounds if not r["mqtt"]]
    on = [r["fps"] for r in rounds if r["mqtt"]]
    print(json.dumps({"summary": {
        "fps_without_mqtt": off, "fps_with_mqtt": on,
        "throughput_change_pct": round(100 * (statistics.mean(on) / statistics.mean(off) - 1), 1),
        "cpu_ms_per_part_without_mqtt": [r["cpu_ms_per_part"] for r in rounds if not r["mqtt"]],
        "cpu_ms_per_part_with_mqtt": [r["cpu_ms_per_part"] for r in rounds if r["mqtt"]],
        "cycle_p50_ms_without_mqtt": [r["cycle_p50_ms"] for r in rounds if not r["mqtt"]],
        "cycle_p50_ms_with_mqtt": [r["cycle_p50_ms"] for r in rounds if r["mqtt"]],
        "latency_at_rate": {k: latency[k] for k in ("rate_hz", "to_subscriber_p50_ms", "to_subscriber_p99_ms",
                                                    "puback_le_ms", "received") if k in latency},
        "drain": dr}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
