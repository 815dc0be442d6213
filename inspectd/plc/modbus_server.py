"""Modbus TCP server mode: the PLC polls. Block A and B are holding registers in a pymodbus datastore.

The PLC may read both blocks (FC03) and write block A (FC06/FC16); anything else -- coils, writes
into block B, addresses outside the blocks -- gets a Modbus exception, so each side owns its block.
A write into block A wakes the link at once (no polling). Clients not on the allow-list are
disconnected as they connect.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from inspectd.plc.config import ModbusServerConfig
from inspectd.plc.layout import A_WORDS, B_WORDS
from inspectd.plc.transport import Notify

log = structlog.get_logger("inspectd.plc.modbus_server")

FC_READ_HR, FC_WRITE_HR, FC_WRITE_HRS = 3, 6, 16


class _Handler(ServerRequestHandler):
    """pymodbus' per-connection handler plus the allow-list check and a connection count."""

    def connection_made(self, transport: Any) -> None:
        owner: _Server = self.server
        peer = transport.get_extra_info("peername") or ("?", 0)
        if owner.allow and peer[0] not in owner.allow:
            owner.rejected += 1
            log.warning("plc_client_refused", peer=peer[0])
            self.transport = transport  # so close() also drops it from the listener's table
            self.close()
            return
        owner.clients += 1
        log.info("plc_client_connected", peer=peer[0])
        super().connection_made(transport)

    def callback_disconnected(self, exc: Exception | None) -> None:
        self.server.clients -= 1
        log.info("plc_client_disconnected", error=str(exc) if exc else None)
        super().callback_disconnected(exc)


class _Server(ModbusTcpServer):
    allow: frozenset[str] = frozenset()
    clients = 0
    rejected = 0

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ModbusServerTransport:
    event_driven = True

    def __init__(self, cfg: ModbusServerConfig, on_change: Notify) -> None:
        self.cfg = cfg
        self._on_change = on_change
        self._server: _Server | None = None
        self._own_write = False
        self._a = range(cfg.layout.block_a, cfg.layout.block_a + A_WORDS)
        self._b = range(cfg.layout.block_b, cfg.layout.block_b + B_WORDS)
        self.port = cfg.port  # the bound port (when cfg.port is 0)

    async def _action(self, fc: int, _start: int, address: int, count: int, _regs: list[int],
                      values: list[int] | list[bool] | None) -> ExcCodes | None:  # bools: coils (refused)
        if self._own_write:
            return None
        if fc not in (FC_READ_HR, FC_WRITE_HR, FC_WRITE_HRS):
            return ExcCodes.ILLEGAL_FUNCTION  # coils/inputs are not part of the interface
        if values is not None:
            if address not in self._a or address + count - 1 not in self._a:
                return ExcCodes.ILLEGAL_ADDRESS  # the PLC writes block A only
            asyncio.get_running_loop().call_soon(self._on_change)  # runs after the write is applied
        return None

    async def open(self) -> None:
        if self._server is not None:
            return
        lay = self.cfg.layout
        dev = SimDevice(id=self.cfg.unit_id, action=self._action, simdata=[
            SimData(lay.block_a, count=A_WORDS, values=0, datatype=DataType.REGISTERS),
            SimData(lay.block_b, count=B_WORDS, values=0, datatype=DataType.REGISTERS)])
        srv = _Server(dev, address=(self.cfg.address, self.cfg.port))
        srv.allow = frozenset(self.cfg.allow)
        await srv.serve_forever(background=True)  # returns once listening
        self._server = srv
        sockets = getattr(srv.transport, "sockets", None) or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("plc_modbus_server_listening", address=self.cfg.address, port=self.port, unit_id=self.cfg.unit_id)

    async def read_a(self) -> list[int]:
        assert self._server is not None
        self._own_write = True
        try:
            return list(await self._server.async_getValues(self.cfg.unit_id, FC_READ_HR, self._a.start, A_WORDS))
        finally:
            self._own_write = False

    async def write_b(self, words: list[int]) -> None:
        assert self._server is not None
        self._own_write = True  # one datastore update: a PLC read sees the old or the new block, never a mix
        try:
            await self._server.async_setValues(self.cfg.unit_id, FC_WRITE_HRS, self._b.start, words)
        finally:
            self._own_write = False

    async def close(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    @property
    def connected(self) -> bool:
        return self._server is not None and self._server.clients > 0

    @property
    def rejected(self) -> int:
        return self._server.rejected if self._server else 0
