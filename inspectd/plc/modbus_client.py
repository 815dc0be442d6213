"""Modbus TCP client mode: the daemon writes block B into the PLC's holding registers and polls block A.

Holding registers only (FC03 read, FC16 write): a Siemens MB_SERVER maps coils onto its Q outputs.
pymodbus' own retries and reconnects are switched off; the link owns timeouts and reconnects.
"""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient

from inspectd.plc.config import ModbusClientConfig
from inspectd.plc.layout import A_WORDS
from inspectd.plc.transport import Notify


class ModbusClientTransport:
    event_driven = False

    def __init__(self, cfg: ModbusClientConfig, on_change: Notify) -> None:
        del on_change  # polled: the PLC cannot tell us when it wrote
        self.cfg = cfg
        self._c: AsyncModbusTcpClient | None = None

    async def open(self) -> None:
        if self.connected:
            return
        await self.close()
        # retries=0 and reconnect_delay=0: one request, one answer or an error within timeout_ms
        c = AsyncModbusTcpClient(self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_ms / 1e3,
                                 retries=0, reconnect_delay=0)
        if not await c.connect():
            c.close()
            raise ConnectionError(f"cannot connect to {self.cfg.host}:{self.cfg.port}")
        self._c = c

    async def read_a(self) -> list[int]:
        assert self._c is not None
        rr = await self._c.read_holding_registers(self.cfg.layout.block_a, count=A_WORDS, device_id=self.cfg.unit_id)
        if rr.isError():  # an exception response is returned, not raised
            raise ConnectionError(f"read block A: {rr}")
        return list(rr.registers)

    async def write_b(self, words: list[int]) -> None:
        assert self._c is not None
        rr = await self._c.write_registers(self.cfg.layout.block_b, words, device_id=self.cfg.unit_id)
        if rr.isError():
            raise ConnectionError(f"write block B: {rr}")

    async def close(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None

    @property
    def connected(self) -> bool:
        return self._c is not None and self._c.connected
