"""Config and factory: the `plc:` union, descriptions on every key, and the `none` link."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from inspectd.config.schema import StationConfig
from inspectd.plc import config as plc_config
from inspectd.plc.config import ModbusServerConfig, NoPlcConfig, PlcConfig, S7Config
from inspectd.plc.link import NoPlcLink, TransportLink
from inspectd.plc.registry import make_plc_link

REPO = Path(__file__).resolve().parents[1]


def test_demo_plc_station_parses_to_modbus_server_on_5020() -> None:
    raw = yaml.safe_load((REPO / "configs/demo/station-plc.yaml").read_text())
    st = StationConfig.model_validate(raw)
    assert isinstance(st.plc, ModbusServerConfig) and st.trigger.source == "plc"
    assert (st.plc.address, st.plc.port, st.plc.layout.block_a, st.plc.layout.block_b) == ("127.0.0.1", 5020, 0, 100)
    free_run = {**raw, "plc": {"type": "none"}, "trigger": {"source": "free_run"}}
    assert isinstance(StationConfig.model_validate(free_run).plc, NoPlcConfig)
    with pytest.raises(ValidationError, match="needs a plc section"):  # PLC triggers with no PLC
        StationConfig.model_validate({**raw, "plc": {"type": "none"}})


def test_union_rejects_typos_and_defaults_s7_layout() -> None:
    ta: TypeAdapter[PlcConfig] = TypeAdapter(PlcConfig)
    with pytest.raises(ValidationError, match="prot"):
        ta.validate_python({"type": "modbus_server", "prot": 5020})
    s7 = ta.validate_python({"type": "s7", "host": "10.0.0.5"})
    assert isinstance(s7, S7Config) and (s7.db, s7.layout.block_a, s7.layout.block_b) == (100, 0, 10)


def test_every_config_key_is_described() -> None:
    models = [m for m in vars(plc_config).values()
              if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == plc_config.__name__]
    assert len(models) >= 8
    for m in models:
        for name, f in m.model_fields.items():
            assert f.description, f"{m.__name__}.{name} has no description"


def test_factory() -> None:
    none = make_plc_link(NoPlcConfig(type="none"), on_recipe=lambda n: True)
    assert isinstance(none, NoPlcLink)
    none.start()
    t0 = time.monotonic()
    assert none.next_trigger(0.05) is None and time.monotonic() - t0 >= 0.04  # waits: the caller must not spin
    none.set_ready(True)
    none.stop()
    assert not none.connected
    link = make_plc_link(ModbusServerConfig(type="modbus_server", port=0), on_recipe=lambda n: True)
    assert isinstance(link, TransportLink) and not link.connected  # built, not started: no I/O yet
