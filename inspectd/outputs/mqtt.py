"""MQTT publisher: each journaled verdict as JSON to the plant broker, store-and-forward by a persisted cursor.

Topics (prefix = mqtt.topic_prefix, default `inspectd`):
  <prefix>/<station>/verdict   one JSON message per verdict, QoS 1, in journal order
  <prefix>/<station>/state     retained `online` / `offline` (`offline` is also the Last Will)
  <prefix>/<station>/counters  retained JSON every counters_every_s

The publisher thread reads the journal (never the pipeline's queues), so the cycle never waits for the broker:
the hot path costs one Event.set per verdict (a wake-up, so a verdict goes out as soon as its row is written).
The cursor moves only past rows whose PUBACK arrived, for every row before them too; it is saved to a file, so
a broker outage, a network cut or a daemon restart resends what was not acknowledged (QoS 1: duplicates
possible, loss not). paho resends unacknowledged messages itself, in order, after a reconnect.
"""

from __future__ import annotations

import collections
import json
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inspectd.outputs.config import MqttConfig
from inspectd.outputs.journal_feed import Cursor, JournalFeed
from inspectd.types import Part, Verdict

log = structlog.get_logger("inspectd.mqtt")

# verdict -> broker acknowledgement, seconds; a backlog drained after an outage lands in the upper buckets
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)
CURSOR_SAVE_S = 0.2  # at most this much acknowledged work is resent after a crash
BACKLOG_EVERY_S = 1.0
EAGER_S, EAGER_WINDOW_S = 0.002, 0.05  # after a wake-up: read every 2 ms for 50 ms (the journal commits in that time)


def topics(cfg: MqttConfig, station: str) -> dict[str, str]:
    base = f"{cfg.topic_prefix}/{station}"
    return {"verdict": f"{base}/verdict", "state": f"{base}/state", "counters": f"{base}/counters"}


def verdict_message(station: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A journal row as the verdict payload: every journal column (new ones included), plus the station.
    A non-finite number becomes null: strict JSON has no NaN, and one bad row must not stop the stream."""
    msg: dict[str, Any] = {"station": station, "journal_id": row["id"]}
    msg.update({k: _finite(v) for k, v in row.items() if k != "id"})
    return msg


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


def make_client(cfg: MqttConfig, station: str, will_topic: str | None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id or f"inspectd-{station}",
                         protocol=paho.MQTTv311)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls is not None:
        client.tls_set(ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                       certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                       keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.tls_insecure_set(cfg.tls.insecure)
    if will_topic is not None:
        client.will_set(will_topic, "offline", qos=1, retain=True)
    client.on_socket_open = _no_delay
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    client.max_inflight_messages_set(cfg.max_inflight)
    return client


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """TCP_NODELAY: paho leaves Nagle on, and a small PUBLISH then waits behind the previous one for the broker's
    delayed ACK (40 ms on Linux). Measured here at 50 parts/s: PUBACK within 20 ms for 55 % of verdicts without
    it, 86 % with it, 99 % with the broker's `set_tcp_nodelay true` too."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttPublisher:
    """A VerdictSink (for the wake-up only) plus the publisher thread. start() never waits for the broker."""

    def __init__(self, cfg: MqttConfig, station: str, journal_path: Path,
                 counters: Callable[[], Mapping[str, Any]] | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.station = station
        self.topics = topics(cfg, station)
        self.feed = JournalFeed(journal_path)
        self.cursor = Cursor(cfg.cursor_path or journal_path.with_name(journal_path.name + ".mqtt-cursor"))
        self.counters = counters
        self.client = make_client(cfg, station, self.topics["state"])
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        # Plain counters, each written by one thread (the publisher or paho's), read by the metrics collector.
        self.published = 0  # PUBACKs for verdict messages (duplicates after a reconnect included)
        self.sent = 0
        self.connects = 0
        self.disconnects = 0
        self.errors = 0
        self.backlog_rows = 0
        self.backlog_age_s = 0.0
        self.connected = False
        self._sent_id = 0  # last journal id handed to paho
        self._more = True  # the last journal read may have left rows behind
        self._inflight: collections.OrderedDict[int, tuple[int, float]] = collections.OrderedDict()  # mid -> (id, t)
        self._acked: set[int] = set()  # ids acknowledged out of order, waiting for those before them
        self._acks: collections.deque[tuple[int, float]] = collections.deque()  # (mid, time) from paho's thread
        self._wake = threading.Event()
        self._idle = False  # the publisher is in its long (poll_ms) sleep: a verdict should wake it
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self.latency = Histogram("inspectd_mqtt_publish_latency_seconds",
                                 "verdict issued -> broker acknowledged (PUBACK), QoS 1",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        if registry is not None:
            registry.register(_MqttCollector(self))

    # -- hot path ---------------------------------------------------------------------------------
    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        # Wake the publisher only from its long sleep: while parts flow it is already up (PUBACKs wake it), and a
        # wake-up per verdict would make it compete with the stage threads for the GIL on every part.
        if self._idle:
            self._idle = False
            self._wake.set()

    # -- paho's network thread: record and wake, nothing else (paho holds its own lock here) ---------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.warning("mqtt_connect_refused", reason=str(rc), host=self.cfg.host, port=self.cfg.port)
            return
        self.connected = True
        self.connects += 1
        client.publish(self.topics["state"], "online", qos=1, retain=True)
        log.info("mqtt_connected", host=self.cfg.host, port=self.cfg.port, connects=self.connects)
        self._wake.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self.connected and not self._stop.is_set():
            self.disconnects += 1
            log.warning("mqtt_disconnected", reason=str(rc), backlog=self.backlog_rows)
        self.connected = False

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, rc: Any, props: Any = None) -> None:
        self._acks.append((mid, time.time()))
        self._wake.set()

    # -- publisher thread -------------------------------------------------------------------------
    def start(self) -> None:
        self._sent_id = self.cursor.load()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()  # paho's thread connects, reconnects (1..5 s back-off) and resends
        self._thread.start()
        log.info("mqtt_started", host=self.cfg.host, port=self.cfg.port, topic=self.topics["verdict"],
                 cursor=self.cursor.last_id, cursor_path=str(self.cursor.path))

    def _run(self) -> None:
        next_counters = time.monotonic()
        next_backlog = 0.0
        next_save = 0.0
        eager_until = 0.0
        next_poll = 0.0
        while True:
            now = time.monotonic()
            self._take_acks()
            if now >= next_save:
                self.cursor.save()
                next_save = now + CURSOR_SAVE_S
            try:
                # Between regular polls (eager window), query only when the journal's files changed (a stat, no SQL).
                look = now >= next_poll or self._more or self.feed.changed()
                moved = self._send_more() if look else False
                if now >= next_poll:
                    next_poll = now + self.cfg.poll_ms / 1e3
                if now >= next_backlog:
                    self._measure_backlog()
                    next_backlog = now + BACKLOG_EVERY_S
            except Exception as e:  # a locked or missing journal: log, keep the thread, try again
                self.errors += 1
                log.error("mqtt_journal_read_failed", error=str(e))
                moved = False
                self._stop.wait(1.0)
            if now >= next_counters:
                self._publish_counters()
                next_counters = now + self.cfg.counters_every_s
            if self._stop.is_set() and (self._drained() or now >= self._drain_until):
                break
            if not moved:
                # A verdict's wake-up comes before the journal commits its row: look again soon, not after poll_ms.
                eager = now < eager_until
                self._idle = not eager
                woken = self._wake.wait(EAGER_S if eager else self.cfg.poll_ms / 1e3)
                self._idle = False
                if woken:
                    self._wake.clear()
                    eager_until = time.monotonic() + EAGER_WINDOW_S
        self._take_acks()
        self.cursor.save()
        try:
            self._measure_backlog()  # for the last log line: what the next start will send
        except Exception as e:
            log.debug("mqtt_backlog_unknown", error=str(e))

    def _send_more(self) -> bool:
        room = self.cfg.max_inflight - len(self._inflight)
        if not self.connected or room <= 0:
            return False
        limit = min(room, self.cfg.batch)
        rows = self.feed.after(self._sent_id, limit)
        self._more = len(rows) == limit  # a full read: more rows may wait (a backlog), read again without a gate
        if not rows and not self._inflight and self._sent_id > self.feed.max_id():  # journal recreated: ids restart
            log.warning("mqtt_journal_restarted", cursor=self._sent_id)
            self._sent_id = self.cursor.last_id = 0
            return True
        for row in rows:
            body = json.dumps(verdict_message(self.station, row), separators=(",", ":"), allow_nan=False)
            info = self.client.publish(self.topics["verdict"], body, qos=self.cfg.qos)
            self._inflight[info.mid] = (int(row["id"]), float(row["t_verdict"]))
            self._sent_id = int(row["id"])
            self.sent += 1
        return bool(rows)

    def _take_acks(self) -> None:
        while self._acks:
            mid, t = self._acks.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # state / counters messages
            row_id, t_verdict = entry
            self.published += 1
            self.latency.observe(max(0.0, t - t_verdict))
            self._acked.add(row_id)
        # The cursor moves over a contiguous run of acknowledged ids only: everything before it is at the broker.
        oldest_open = min((rid for rid, _ in self._inflight.values()), default=None)
        done = [rid for rid in self._acked if oldest_open is None or rid < oldest_open]
        if done:
            self.cursor.last_id = max(self.cursor.last_id, *done)
            self._acked.difference_update(done)

    def _measure_backlog(self) -> None:
        n, oldest = self.feed.backlog(self.cursor.last_id)
        self.backlog_rows = n
        self.backlog_age_s = max(0.0, time.time() - oldest) if oldest is not None else 0.0

    def _drained(self) -> bool:
        return not self._inflight and self.feed.max_id() <= self.cursor.last_id

    def _publish_counters(self) -> None:
        if not self.connected or self.counters is None:
            return
        try:
            body = dict(self.counters())
        except Exception as e:  # the daemon is half started or stopping: skip this period
            log.debug("mqtt_counters_skipped", error=str(e))
            return
        body.update(station=self.station, t=round(time.time(), 3), mqtt_backlog=self.backlog_rows)
        self.client.publish(self.topics["counters"], json.dumps(body, separators=(",", ":")), qos=0, retain=True)

    # -- stop -------------------------------------------------------------------------------------------
    def close(self, drain_s: float | None = None) -> None:
        """Send the backlog for up to `drain_s` (mqtt.drain_s), then `offline` and a clean disconnect.
        What is left stays in the journal for the next start."""
        if not self._thread.is_alive():
            return
        self._drain_until = time.monotonic() + (self.cfg.drain_s if drain_s is None else drain_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(self.cfg.drain_s + 10)
        if self.connected:
            info = self.client.publish(self.topics["state"], "offline", qos=1, retain=True)
            info.wait_for_publish(2.0)
        self.client.disconnect()  # a clean DISCONNECT: the broker drops the Last Will
        self.client.loop_stop()
        self.feed.close()
        log.info("mqtt_stopped", cursor=self.cursor.last_id, published=self.published, backlog=self.backlog_rows)


class _MqttCollector(Collector):
    def __init__(self, pub: MqttPublisher) -> None:
        self.pub = pub

    def collect(self) -> Iterator[Metric]:
        p = self.pub
        yield GaugeMetricFamily("inspectd_mqtt_connected", "1 while connected to the broker", value=float(p.connected))
        yield GaugeMetricFamily("inspectd_mqtt_backlog_rows", "journaled verdicts the broker has not acknowledged",
                                value=p.backlog_rows)
        yield GaugeMetricFamily("inspectd_mqtt_backlog_age_seconds",
                                "age of the oldest verdict the broker has not acknowledged", value=p.backlog_age_s)
        yield GaugeMetricFamily("inspectd_mqtt_inflight", "verdict messages sent, PUBACK awaited",
                                value=len(p._inflight))
        yield CounterMetricFamily("inspectd_mqtt_published", "verdict messages acknowledged by the broker",
                                  value=p.published)
        yield CounterMetricFamily("inspectd_mqtt_connects", "successful broker connections", value=p.connects)
        yield CounterMetricFamily("inspectd_mqtt_disconnects", "broker connections lost", value=p.disconnects)
        yield CounterMetricFamily("inspectd_mqtt_errors", "journal read failures in the publisher", value=p.errors)
        yield GaugeMetricFamily("inspectd_mqtt_cursor", "last journal id acknowledged by the broker",
                                value=p.cursor.last_id)
