"""Modbus TCP server mode: the PLC polls. Block A and B are holding registers served from the link's loop.

Addresses are 0-based PDU addresses (what goes on the wire): HR 0 is "40001" in the 1-based 4xxxx notation.
The PLC may read both blocks (FC03) and write block A (FC06/FC16); anything else -- coils, writes into block
B, addresses outside the blocks -- gets a Modbus exception, so each side owns its block. A write into block A
wakes the link at once (no polling).

A small server of our own rather than pymodbus' (whose request handler keeps one request per read, so
pipelined requests went unanswered, and which logs a traceback per unknown unit id):
- every complete request in the receive buffer is answered, in order (pipelining: MB_CLIENT and libmodbus
  masters may send the next request before the answer);
- unit ids: `unit_id` plus `extra_unit_ids` (0 and 255 by default); others get exception 0x0B;
- `max_connections`: one more drops a connection that never sent a request (oldest first), else the one idle
  the longest; clients not on `allow` are closed;
- accept failures (EMFILE ...) drop the idlest connection and are logged once per interval with a count;
- protocol noise (garbage frames, bad unit ids, illegal functions) is counted and logged once per interval,
  never with a traceback.
Requests are answered synchronously on the loop, so a read sees block B whole: before or after a
`write_b`, never half of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable

import structlog

from inspectd.plc.config import ModbusServerConfig
from inspectd.plc.layout import A_WORDS, B_WORDS
from inspectd.plc.transport import Notify

log = structlog.get_logger("inspectd.plc.modbus_server")

FC_READ_HR, FC_WRITE_HR, FC_WRITE_HRS = 3, 6, 16
EX_ILLEGAL_FUNCTION, EX_ILLEGAL_ADDRESS, EX_ILLEGAL_VALUE, EX_GATEWAY_NO_RESPONSE = 1, 2, 3, 0x0B
MAX_ADU = 260  # MBAP (7) + PDU (253)
MAX_UNREAD = 256 * 1024  # answers a client left unread; beyond, it is cut off (memory stays bounded)
NOISE_LOG_S = 10.0  # each kind of protocol noise is logged at most this often, with the count since


class NoiseLog:
    """Counts events by kind; logs the first of each kind, then at most once per `interval` with the count."""

    def __init__(self, interval: float = NOISE_LOG_S, level: str = "warning", prefix: str = "plc_modbus_",
                 on_event: Callable[[str], None] | None = None) -> None:
        self.interval, self.prefix, self.on_event = interval, prefix, on_event
        self._log = getattr(log, level)
        self.counts: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    def __call__(self, kind: str, **fields: object) -> None:
        self.counts[kind] += 1
        if self.on_event is not None:
            self.on_event(kind)
        self._unlogged[kind] += 1
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.interval:
            self._log(self.prefix + kind, count=self._unlogged[kind], total=self.counts[kind], per_s=self.interval,
                      **fields)
            self._unlogged[kind] = 0
            self._last[kind] = now


class _Conn(asyncio.Protocol):
    """One PLC connection: frames the byte stream, answers each request in order."""

    def __init__(self, server: ModbusServerTransport, peer: str) -> None:
        self.server, self.peer = server, peer
        self.buf = bytearray()
        self.last_active = time.monotonic()
        self.requests = 0  # framed requests answered: a connection that never asked anything is dropped first
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._forget(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.buf += data
        out = bytearray()
        while len(self.buf) >= 7:
            tid, proto, length = struct.unpack_from(">HHH", self.buf)
            if proto != 0 or not 2 <= length <= MAX_ADU - 6:
                self.server.noise("garbage_frame", peer=self.peer, first_bytes=bytes(self.buf[:8]).hex())
                self.close()
                return
            if len(self.buf) < 6 + length:
                break  # the rest of this request is still on its way
            unit, pdu = self.buf[6], bytes(self.buf[7:6 + length])
            del self.buf[:6 + length]
            self.requests += 1
            answer = self.server._answer(unit, pdu, self.peer)
            if answer is not None:
                out += struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer
        if out and self.transport is not None:
            self.transport.write(bytes(out))  # one write for every request in this chunk, in order
            if self.transport.get_write_buffer_size() > MAX_UNREAD:
                self.server.noise("slow_reader", peer=self.peer)  # pipelines requests, never reads answers
                self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()



def _factory(proto: _Conn) -> Callable[[], _Conn]:
    """asyncio wants a protocol factory; the connection's protocol exists already (bound here, not late)."""
    return lambda: proto

class ModbusServerTransport:
    event_driven = True

    def __init__(self, cfg: ModbusServerConfig, on_change: Notify,
                 on_noise: Callable[[str], None] | None = None) -> None:
        """`on_noise(kind)`: each counted event (the registry adds them to the link's stats for /metrics)."""
        self.cfg = cfg
        self._on_change = on_change
        lay = cfg.layout
        self._a0, self._b0 = lay.block_a, lay.block_b
        self._a = [0] * A_WORDS
        self._b = [0] * B_WORDS
        self._units = None if cfg.unit_id == 0 else frozenset([cfg.unit_id, *cfg.extra_unit_ids])
        self._allow = frozenset(cfg.allow)
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._conns: set[_Conn] = set()
        self.noise = NoiseLog(on_event=on_noise)  # protocol noise and refusals: warnings
        self.events = NoiseLog(level="info", prefix="plc_")  # connects/disconnects: a flood must not flood the log
        self.port = cfg.port  # the bound port (when cfg.port is 0)
        self.rejected = 0  # connections refused by the allow list
        self.dropped_idle = 0  # connections closed to stay within max_connections (or to free a descriptor)
        self.accept_errors = 0

    # ------------------------------------------------------------------ the link's side
    async def open(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.cfg.address else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.cfg.address, self.cfg.port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(sock))
        log.info("plc_modbus_server_listening", address=self.cfg.address, port=self.port,
                 unit_ids="any" if self._units is None else sorted(self._units),
                 max_connections=self.cfg.max_connections)

    async def read_a(self) -> list[int]:
        return list(self._a)

    async def write_b(self, words: list[int]) -> None:
        self._b = list(words)  # replaced whole: a request answered before sees the old block, after the new

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._accepting
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for c in list(self._conns):
            c.close()
        self._conns.clear()

    @property
    def connected(self) -> bool:
        return bool(self._conns)

    @property
    def clients(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ connections
    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as e:
                # EMFILE/ENFILE/ENOBUFS/ENOMEM: out of descriptors or memory. Free one (the idlest client),
                # say so once per interval, and try again shortly; never a traceback per attempt.
                self.accept_errors += 1
                self.noise("accept_failed", error=errno.errorcode.get(e.errno or 0, str(e)),
                           clients=len(self._conns))
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    self._drop_idlest()
                await asyncio.sleep(0.01)
                continue
            peer = addr[0]
            if self._allow and peer not in self._allow:
                self.rejected += 1
                self.noise("client_refused", peer=peer)
                conn.close()
                continue
            if len(self._conns) >= self.cfg.max_connections:
                self._drop_idlest()
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            proto = _Conn(self, peer)
            try:
                await loop.connect_accepted_socket(_factory(proto), conn)
            except OSError as e:
                self.noise("accept_failed", error=str(e), clients=len(self._conns))
                conn.close()
                continue
            self._conns.add(proto)
            self.events("client_connected", peer=peer, clients=len(self._conns))

    def _drop_idlest(self) -> None:
        if not self._conns:
            return
        # Connections that never sent a request go first (a flood of new ones must not push out the PLC
        # between two of its polls), then the one idle the longest.
        idlest = min(self._conns, key=lambda c: (c.requests > 0, c.last_active))
        self._conns.discard(idlest)
        self.dropped_idle += 1
        self.noise("connection_dropped", peer=idlest.peer, idle_s=round(time.monotonic() - idlest.last_active, 3),
                   requests=idlest.requests,
                   max_connections=self.cfg.max_connections)
        idlest.close()

    def _forget(self, conn: _Conn) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self.events("client_disconnected", peer=conn.peer, clients=len(self._conns))

    # ------------------------------------------------------------------ requests
    def _answer(self, unit: int, pdu: bytes, peer: str) -> bytes | None:
        """The response PDU for one request PDU (an exception PDU for anything not in the interface)."""
        fc = pdu[0]
        if self._units is not None and unit not in self._units:
            self.noise("unknown_unit_id", peer=peer, unit_id=unit, answered=sorted(self._units))
            return bytes([fc | 0x80, EX_GATEWAY_NO_RESPONSE])
        try:
            if fc == FC_READ_HR:
                address, count = struct.unpack(">HH", pdu[1:5])
                if not 1 <= count <= 125:
                    return self._exc(fc, EX_ILLEGAL_VALUE, peer)
                words = self._read(address, count)
                if words is None:
                    return self._exc(fc, EX_ILLEGAL_ADDRESS, peer)
                return struct.pack(f">BB{count}H", fc, 2 * count, *words)
            if fc == FC_WRITE_HR:
                address, value = struct.unpack(">HH", pdu[1:5])
                if not self._write_a(address, [value]):
                    return self._exc(fc, EX_ILLEGAL_ADDRESS, peer)
                return pdu[:5]
            if fc == FC_WRITE_HRS:
                address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
                if not 1 <= count <= 123 or nbytes != 2 * count or len(pdu) < 6 + nbytes:
                    return self._exc(fc, EX_ILLEGAL_VALUE, peer)
                if not self._write_a(address, list(struct.unpack_from(f">{count}H", pdu, 6))):
                    return self._exc(fc, EX_ILLEGAL_ADDRESS, peer)
                return pdu[:5]
        except struct.error:  # a request PDU shorter than its function needs
            return self._exc(fc, EX_ILLEGAL_VALUE, peer)
        return self._exc(fc & 0x7F, EX_ILLEGAL_FUNCTION, peer)  # coils, inputs: not part of the interface

    def _exc(self, fc: int, code: int, peer: str) -> bytes:
        self.noise("exception_answered", peer=peer, function=fc, exception_code=code)
        return bytes([(fc | 0x80) & 0xFF, code])

    def _read(self, address: int, count: int) -> list[int] | None:
        out = []
        for r in range(address, address + count):
            if 0 <= r - self._a0 < A_WORDS:
                out.append(self._a[r - self._a0])
            elif 0 <= r - self._b0 < B_WORDS:
                out.append(self._b[r - self._b0])
            else:
                return None
        return out

    def _write_a(self, address: int, values: list[int]) -> bool:
        i = address - self._a0
        if i < 0 or i + len(values) > A_WORDS:
            return False  # the PLC writes block A only
        self._a[i:i + len(values)] = values
        self._on_change()  # the link reads block A on its next turn of the loop
        return True
