"""The daemon's side of a PLC interface, for tests: a transport link built as the daemon builds it, started."""

from __future__ import annotations

from typing import Any

from inspectd.plc.config import PlcConfig
from inspectd.plc.link import TransportLink
from inspectd.plc.registry import make_plc_link


def started_link(cfg: PlcConfig, **callbacks: Any) -> TransportLink:
    """make_plc_link(cfg) (every recipe accepted unless `on_recipe` is given), started; the caller stops it."""
    link = make_plc_link(cfg, **{"on_recipe": lambda n: True, **callbacks})
    assert isinstance(link, TransportLink)
    link.start()
    return link
