"""`make_plc_link(cfg)`: the station's `plc:` section -> a ready (not yet started) PlcLink."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from inspectd.plc.config import ModbusClientConfig, ModbusServerConfig, NoPlcConfig, PlcConfig, S7Config
from inspectd.plc.layout import Layout
from inspectd.plc.link import LinkStats, NoPlcLink, OnMissed, OnRecipe, PlcLink, TransportLink
from inspectd.plc.modbus_client import ModbusClientTransport
from inspectd.plc.modbus_server import ModbusServerTransport
from inspectd.plc.runstate import RunState
from inspectd.plc.s7 import S7Transport
from inspectd.plc.transport import Transport

_CLIENTS: dict[type, Callable[..., Transport]] = {ModbusClientConfig: ModbusClientTransport, S7Config: S7Transport}
# Modbus server events (NoiseLog kinds) -> the LinkStats counter /metrics exports
_NOISE_STATS = {"connection_dropped": "connections_dropped", "client_refused": "connections_refused",
                "accept_failed": "accept_errors", "unknown_unit_id": "protocol_errors",
                "garbage_frame": "protocol_errors", "exception_answered": "protocol_errors",
                "slow_reader": "protocol_errors"}


def _counter(stats: LinkStats) -> Callable[[str], None]:
    def count(kind: str) -> None:
        name = _NOISE_STATS.get(kind)
        if name is not None:
            setattr(stats, name, getattr(stats, name) + 1)
    return count


def make_plc_link(cfg: PlcConfig, *, on_recipe: OnRecipe, on_missed: OnMissed | None = None,
                  on_publish: Callable[[float], None] | None = None, state_path: Path | None = None,
                  alive: Callable[[], bool] | None = None,
                  on_trigger: Callable[[int, float], None] | None = None) -> PlcLink:
    """`on_recipe(plc_id) -> accepted` runs on a worker thread when the PLC raises LOAD_RECIPE.
    `on_missed(part_id, why)` is told about every trigger refused while not READY (for the journal).
    `on_publish(seconds)`: verdict handed over -> visible at the PLC, per result (metrics). Both run on the
    link's thread and must not block.
    `state_path`: the run-state file (RUN_EPOCH, RESULT_SEQ reservation; `runstate.state_path_for(journal)`);
    None: not persisted (tools, tests). `alive()`: the daemon's "parts are flowing", polled by the link once
    per heartbeat period; VISION_HEARTBEAT only counts while it is true. Cheap and non-blocking.
    `on_trigger(part_id, t)`: every accepted trigger, before TRIGGER_ACK is written (the journal's ahead record)."""
    if isinstance(cfg, NoPlcConfig):
        return NoPlcLink()
    layout = Layout(cfg.layout)
    seqs = RunState(state_path)
    if isinstance(cfg, ModbusServerConfig):
        link = TransportLink(lambda notify: ModbusServerTransport(cfg, notify, _counter(link.stats)), layout,
                             cfg.handshake, on_recipe=on_recipe, on_missed=on_missed, on_publish=on_publish,
                             timeout_s=1.0, linger_s=cfg.linger_ms / 1e3, name="modbus_server", seqs=seqs,
                             alive=alive, on_trigger=on_trigger)
        return link
    make = _CLIENTS[type(cfg)]
    return TransportLink(lambda notify: make(cfg, notify), layout, cfg.handshake,
                         on_recipe=on_recipe, on_missed=on_missed, on_publish=on_publish,
                         timeout_s=cfg.timeout_ms / 1e3, poll_s=cfg.poll_ms / 1e3, fast_poll_s=cfg.fast_poll_ms / 1e3,
                         backoff_max_s=cfg.backoff_max_ms / 1e3, name=cfg.type, seqs=seqs, alive=alive,
                         on_trigger=on_trigger)
