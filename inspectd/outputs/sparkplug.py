"""Sparkplug B edge node (mqtt.sparkplug): the station's live state for SCADA hosts such as Ignition.

The station is an edge node (`edge_node`, default the station name) in `group_id`, with one device (`device`)
carrying the metrics below. Its own MQTT session (client id `<client id>-spb`), because NDEATH must be that
session's Will:
  spBv1.0/<group>/NBIRTH/<node>            bdSeq, Node Control/Rebirth              seq 0
  spBv1.0/<group>/DBIRTH/<node>/<device>   every device metric                       seq 1
  spBv1.0/<group>/DDATA/<node>/<device>    the metrics that changed, every update_ms seq 2, 3, ... (mod 256)
  spBv1.0/<group>/NDEATH/<node>            bdSeq (the Will; also sent on a clean stop)
  spBv1.0/<group>/NCMD/<node>              subscribed: Node Control/Rebirth = true sends the births again
bdSeq goes up by one with every connection, so a host pairs each NDEATH with its NBIRTH.

This is a live view (state, not a record): while the broker is away, changes are not queued; the births on
reconnect carry the current values. The lossless record of every verdict is the JSON topic (store-and-forward).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import structlog

from inspectd.outputs import sparkplug_schema as spb
from inspectd.outputs.config import MqttConfig
from inspectd.outputs.mqtt import make_client
from inspectd.outputs.station_view import Snapshot

log = structlog.get_logger("inspectd.sparkplug")

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"

# device metric -> (Sparkplug datatype, value from a snapshot)
METRICS: dict[str, tuple[int, Callable[[Snapshot], Any]]] = {
    "PartsTotal": (spb.UINT64, lambda s: s.parts),
    "RejectsTotal": (spb.UINT64, lambda s: s.rejects),
    "FailsafesTotal": (spb.UINT64, lambda s: s.failsafes),
    "Yield": (spb.DOUBLE, lambda s: s.passes / s.parts if s.parts else 0.0),
    "LastVerdict": (spb.STRING, lambda s: s.last.outcome.value if s.last else ""),
    "LastReason": (spb.STRING, lambda s: s.last.reason if s.last else ""),
    "LastPartId": (spb.INT64, lambda s: s.last.part_id if s.last else -1),
    "LastScore": (spb.DOUBLE, lambda s: float(s.last.score) if s.last else 0.0),
    "LastLatencyMs": (spb.DOUBLE, lambda s: float(s.last.latency_ms) if s.last else 0.0),
    "ActiveRecipe": (spb.STRING, lambda s: s.product),
    "ActiveRecipeNo": (spb.UINT32, lambda s: s.recipe_no),
    "Ready": (spb.BOOLEAN, lambda s: s.ready),
}


class SparkplugNode:
    def __init__(self, cfg: MqttConfig, station: str, snapshot: Callable[[], Snapshot]) -> None:
        sp = cfg.sparkplug
        assert sp is not None
        self.snapshot = snapshot
        self.group, self.node = sp.group_id, sp.edge_node or station
        self.device = sp.device
        self.update_s = sp.update_ms / 1e3
        base = f"{NAMESPACE}/{self.group}"
        self.topics = {"NBIRTH": f"{base}/NBIRTH/{self.node}", "NDEATH": f"{base}/NDEATH/{self.node}",
                       "NCMD": f"{base}/NCMD/{self.node}", "DBIRTH": f"{base}/DBIRTH/{self.node}/{self.device}",
                       "DDATA": f"{base}/DDATA/{self.node}/{self.device}"}
        client_id = f"{cfg.client_id or f'inspectd-{station}'}-spb"
        self.client = make_client(cfg.model_copy(update={"client_id": client_id}), station, None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.cfg = cfg
        self.bd_seq = 0
        self.births = 0
        self._seq = 0
        self._last: dict[str, Any] = {}
        self._lock = threading.Lock()  # seq and last values: paho's thread (births) and ours (DDATA)
        self._connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sparkplug", daemon=True)
        self._set_will()

    def _payload(self, seq: int | None) -> Any:
        p = spb.Payload(timestamp=int(time.time() * 1e3))
        if seq is not None:
            p.seq = seq
        return p

    def _set_will(self) -> None:
        p = self._payload(None)
        spb.add_metric(p, "bdSeq", spb.UINT64, self.bd_seq, p.timestamp)
        self.client.will_set(self.topics["NDEATH"], p.SerializeToString(), qos=1, retain=False)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    # -- paho's thread --------------------------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.warning("sparkplug_connect_refused", reason=str(rc))
            return
        self._connected = True
        client.subscribe(self.topics["NCMD"], qos=1)
        self._births()

    def _births(self) -> None:
        with self._lock:
            now = int(time.time() * 1e3)
            self._seq = 0
            nb = self._payload(0)
            spb.add_metric(nb, "bdSeq", spb.UINT64, self.bd_seq, now)
            spb.add_metric(nb, REBIRTH, spb.BOOLEAN, False, now)
            self.client.publish(self.topics["NBIRTH"], nb.SerializeToString(), qos=0)
            db = self._payload(self._next_seq())
            snap = self.snapshot()
            self._last = {}
            for name, (dtype, value_of) in METRICS.items():
                value = value_of(snap)
                spb.add_metric(db, name, dtype, value, now)
                self._last[name] = value
            self.client.publish(self.topics["DBIRTH"], db.SerializeToString(), qos=0)
            self.births += 1
        log.info("sparkplug_birth", node=self.node, device=self.device, bd_seq=self.bd_seq)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self._connected and not self._stop.is_set():
            log.warning("sparkplug_disconnected", reason=str(rc))
        self._connected = False
        self.bd_seq = (self.bd_seq + 1) % 256  # the next session's NDEATH/NBIRTH pair
        self._set_will()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        p = spb.Payload()
        try:
            p.ParseFromString(msg.payload)
        except Exception:
            log.warning("sparkplug_bad_command", topic=msg.topic)
            return
        if any(m.name == REBIRTH and spb.metric_value(m) is True for m in p.metrics):
            log.info("sparkplug_rebirth_requested")
            self._births()

    # -- our thread: DDATA with what changed ----------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.update_s):
            if not self._connected:
                continue
            try:
                snap = self.snapshot()
            except Exception as e:
                log.debug("sparkplug_snapshot_skipped", error=str(e))
                continue
            with self._lock:
                now = int(time.time() * 1e3)
                changed = {}
                for name, (dtype, value_of) in METRICS.items():
                    value = value_of(snap)
                    if self._last.get(name) != value:
                        changed[name] = (dtype, value)
                if not changed:
                    continue
                p = self._payload(self._next_seq())
                for name, (dtype, value) in changed.items():
                    spb.add_metric(p, name, dtype, value, now)
                    self._last[name] = value
                self.client.publish(self.topics["DDATA"], p.SerializeToString(), qos=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._connected:
            p = self._payload(None)
            spb.add_metric(p, "bdSeq", spb.UINT64, self.bd_seq, p.timestamp)
            self.client.publish(self.topics["NDEATH"], p.SerializeToString(), qos=1).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
