"""The plant outputs a station has (`mqtt:`, `opcua:`), started after the journal and stopped after it.

The daemon holds one PlantOutputs: `sinks` go into the pipeline's sink list (each submit is a wake-up or an
attribute store, never I/O); `close` runs after the journal has written its last row, so MQTT can send it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from inspectd.outputs.mqtt import MqttPublisher
from inspectd.outputs.station_view import StationView


def select_recipe(daemon: Any, plc_id: int) -> bool:
    """OPC UA's SelectRecipe: the daemon's own switch (applied between parts), and the PLC's ACTIVE_RECIPE follows."""
    if not daemon.switch_by_plc_id(plc_id):
        return False
    plc = getattr(daemon, "plc", None)
    if plc is not None:
        plc.set_active_recipe(plc_id)
    return True


class PlantOutputs:
    def __init__(self, station: Any, daemon: Any, journal_path: Path,
                 registry: CollectorRegistry | None = None) -> None:
        self.view = StationView(daemon)
        self.mqtt: MqttPublisher | None = None
        self.opcua: Any = None
        self.sparkplug: Any = None
        mqtt_cfg = getattr(station, "mqtt", None)
        if mqtt_cfg is not None and mqtt_cfg.enabled:
            self.mqtt = MqttPublisher(mqtt_cfg, station.name, journal_path,
                                      counters=lambda: self.view.snapshot().counters(), registry=registry)
            if mqtt_cfg.sparkplug is not None:
                from inspectd.outputs.sparkplug import SparkplugNode  # protobuf: only when configured

                self.sparkplug = SparkplugNode(mqtt_cfg, station.name, self.view.snapshot)
        opcua_cfg = getattr(station, "opcua", None)
        if opcua_cfg is not None and opcua_cfg.enabled:
            from inspectd.outputs.opcua import OpcuaServer  # asyncua loads slowly: only when configured

            self.opcua = OpcuaServer(opcua_cfg, station.name, self.view, on_recipe=lambda n: select_recipe(daemon, n))

    @property
    def sinks(self) -> list[Any]:
        out: list[Any] = []
        if self.opcua is not None or self.sparkplug is not None:
            out.append(self.view)
        if self.mqtt is not None:
            out.append(self.mqtt)
        return out

    def start(self) -> None:
        if self.mqtt is not None:
            self.mqtt.start()
        if self.sparkplug is not None:
            self.sparkplug.start()
        if self.opcua is not None:
            self.opcua.start()

    def close(self) -> None:
        if self.opcua is not None:
            self.opcua.close()
        if self.sparkplug is not None:
            self.sparkplug.close()
        if self.mqtt is not None:
            self.mqtt.close()
