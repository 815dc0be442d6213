"""PLC transport configs: one model per transport, gathered into the `PlcConfig` union on `type`.

The register/DB layout is shared by every transport (Modbus holding registers or the words of
an S7 DB); its defaults are the table in the README's "PLC interface" section.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from inspectd.config.base import Model

Bit = Annotated[int, Field(ge=0, le=15)]


class ControlBits(Model):
    """Bit numbers (0 = least significant) in the PLC's CONTROL word (block A, word 0)."""

    trigger_enable: Bit = Field(0, description="held by the PLC while the line runs")
    trigger: Bit = Field(1, description="raised to request an inspection, held until TRIGGER_ACK")
    result_ack: Bit = Field(2, description="raised after the PLC latched the result, held until RESULT_VALID drops")
    clear_error: Bit = Field(3, description="rising edge clears latched errors, OVERRUN and MISSED_TRIGGER")
    load_recipe: Bit = Field(4, description="rising edge loads RECIPE_NO; held until RECIPE_ACK or RECIPE_FAIL")
    set_offline: Bit = Field(5, description="while set the daemon reports not ONLINE and not READY")

    @model_validator(mode="after")
    def _distinct(self) -> ControlBits:
        _check_distinct(self.model_dump())
        return self


class StatusBits(Model):
    """Bit numbers in the daemon's STATUS word (block B, word 0)."""

    ready: Bit = Field(0, description="a trigger now will be accepted")
    trigger_ack: Bit = Field(1, description="trigger accepted; dropped after the PLC drops TRIGGER")
    busy: Bit = Field(2, description="at least one triggered part has no verdict yet")
    result_valid: Bit = Field(3, description="the result fields hold an unacknowledged result")
    result_ok: Bit = Field(4, description="the shown result is a pass")
    result_ng: Bit = Field(5, description="the shown result is a reject (or fail-safe)")
    error: Bit = Field(6, description="ERROR_CODE holds an active or latched error")
    recipe_ack: Bit = Field(7, description="LOAD_RECIPE accepted; ACTIVE_RECIPE == RECIPE_NO")
    recipe_fail: Bit = Field(8, description="LOAD_RECIPE refused (unknown recipe or switch failed)")
    online: Bit = Field(9, description="the daemon is running and not set offline")
    overrun: Bit = Field(10, description="the result buffer was full: a result was dropped (latched)")
    missed_trigger: Bit = Field(11, description="a trigger came while not READY (latched)")
    done_toggle: Bit = Field(12, description="flips with every newly published result")

    @model_validator(mode="after")
    def _distinct(self) -> StatusBits:
        _check_distinct(self.model_dump())
        return self


def _check_distinct(bits: dict[str, int]) -> None:
    seen: dict[int, str] = {}
    for name, bit in bits.items():
        if bit in seen:
            raise ValueError(f"{name} and {seen[bit]} both use bit {bit}")
        seen[bit] = name


class LayoutConfig(Model):
    """Where the two blocks live and how 32-bit values are ordered. Field offsets inside a block are fixed."""

    block_a: int = Field(0, ge=0, le=65535 - 10, description="first holding register (or DB word) of block A, "
                         "PLC -> vision, 10 words")
    block_b: int = Field(100, ge=0, le=65535 - 20, description="first holding register (or DB word) of block B, "
                         "vision -> PLC, 20 words")
    word_order: Literal["big", "little"] = Field(
        "big", description="32-bit values (PART_ID, RESULT_PART_ID, SCORE): big = high word first (S7 DINT/REAL)")
    byte_order: Literal["big", "little"] = Field(
        "big", description="bytes inside each word of a 32-bit value: little swaps them (BA DC layouts)")
    control_bits: ControlBits = Field(default_factory=ControlBits, description="bit numbers in CONTROL")
    status_bits: StatusBits = Field(default_factory=StatusBits, description="bit numbers in STATUS")

    @model_validator(mode="after")
    def _no_overlap(self) -> LayoutConfig:
        if self.block_a < self.block_b + 20 and self.block_b < self.block_a + 10:
            raise ValueError(f"block_a ({self.block_a}..+9) and block_b ({self.block_b}..+19) overlap")
        return self


class HandshakeConfig(Model):
    """Timing and buffering of the handshake, the same for every transport."""

    buffer_depth: int = Field(8, ge=1, le=64, description="results held until the PLC acknowledges them; "
                              "beyond, the newest is dropped and OVERRUN set")
    result_ack: bool = Field(True, description="the PLC acknowledges each result with RESULT_ACK; false: each new "
                             "result overwrites the last (watch RESULT_SEQ / DONE_TOGGLE), no buffering")
    heartbeat_ms: int = Field(200, ge=10, le=60_000, description="VISION_HEARTBEAT increments this often")
    plc_heartbeat_ms: int = Field(500, ge=0, le=60_000, description="period of the PLC's PLC_HEARTBEAT; comm lost "
                                  "after 3 periods without change; 0 disables the watchdog")
    trigger_queue: int = Field(16, ge=1, le=1024, description="accepted triggers that may wait for the camera stage")


def _ip(value: str) -> str:
    ipaddress.ip_address(value)  # raises ValueError with the offending text
    return value


class _Common(Model):
    layout: LayoutConfig = Field(default_factory=LayoutConfig, description="register/DB map")
    handshake: HandshakeConfig = Field(default_factory=HandshakeConfig, description="handshake timing and buffer")


class _Client(_Common):
    timeout_ms: int = Field(250, ge=10, le=10_000, description="every request, connect included, fails after this")
    poll_ms: int = Field(10, ge=1, le=1000, description="block A is read this often while the line is idle")
    fast_poll_ms: int = Field(2, ge=1, le=1000, description="block A is read this often while a handshake step "
                              "waits for the PLC or the line triggered within the last second (so each step "
                              "costs one fast poll, not one slow one)")
    backoff_max_ms: int = Field(2000, ge=50, le=60_000, description="reconnect delay doubles from 50 ms up to this")


class NoPlcConfig(Model):
    type: Literal["none"] = Field(description="no PLC: triggers come from elsewhere, verdicts go nowhere")


class ModbusServerConfig(_Common):
    type: Literal["modbus_server"] = Field(description="the daemon is a Modbus TCP server; the PLC polls it")
    address: str = Field("127.0.0.1", description="IP address to bind; 0.0.0.0 for all interfaces")
    port: int = Field(502, ge=0, le=65535, description="TCP port (502 is standard; 0 picks a free one)")
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit/device id the PLC addresses; 0 answers any")
    extra_unit_ids: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=lambda: [0, 255], description="unit ids also answered: 255 is what Siemens MB_CLIENT and "
        "libmodbus send on TCP by default, 0 what many masters use; others get exception 0x0B")
    allow: list[str] = Field(default_factory=list, description="client IP addresses allowed to connect; empty: any")
    max_connections: int = Field(16, ge=1, le=512, description="open client connections at most; one more "
                                 "drops one that never sent a request, else the one idle the longest (counted, logged)")
    linger_ms: int = Field(300, ge=0, le=5000, description="on stop, keep serving the safe state this long so "
                           "a polling PLC reads it")

    @field_validator("address")
    @classmethod
    def _address_ip(cls, v: str) -> str:
        return _ip(v)

    @field_validator("allow")
    @classmethod
    def _allow_ips(cls, v: list[str]) -> list[str]:
        return [_ip(x) for x in v]


class ModbusClientConfig(_Client):
    type: Literal["modbus_client"] = Field(description="the daemon writes block B into the PLC's holding registers "
                                           "and polls block A (never coils)")
    host: str = Field(..., description="PLC address")
    port: int = Field(502, ge=1, le=65535, description="PLC Modbus TCP port")
    unit_id: int = Field(1, ge=0, le=255, description="unit/device id of the PLC's Modbus server")


class S7Config(_Client):
    type: Literal["s7"] = Field(description="Siemens S7 PUT/GET client writing into a standard-access "
                                "(not optimized) DB; block offsets count in words (byte = 2 x word)")
    host: str = Field(..., description="PLC address")
    port: int = Field(102, ge=1, le=65535, description="ISO-on-TCP port")
    rack: int = Field(0, ge=0, le=7, description="CPU rack")
    slot: int = Field(1, ge=0, le=31, description="CPU slot (S7-1200/1500: 1; S7-300: 2)")
    db: int = Field(100, ge=1, le=65535, description="DB number holding both blocks")
    layout: LayoutConfig = Field(default_factory=lambda: LayoutConfig(block_a=0, block_b=10),
                                 description="register/DB map; default DBB0..19 block A, DBB20..59 block B")


PlcConfig = NoPlcConfig | ModbusServerConfig | ModbusClientConfig | S7Config
