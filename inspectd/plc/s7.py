"""Siemens S7 client mode (PUT/GET): both blocks live in one standard-access DB.

Block words sit big-endian in the DB (word n at DBB 2n), so S7 WORD/DINT/REAL read them directly.
Block B goes out as one `db_write` of 40 bytes; no bit writes (python-snap7 3.3's own server
mishandles them, and whole-block writes are idempotent on reconnect). snap7's fixed 5 s socket
timeout does not matter: the async client runs under the link's own timeout.
"""

from __future__ import annotations

import snap7

from inspectd.plc.config import S7Config
from inspectd.plc.layout import A_WORDS, bytes_to_words, words_to_bytes
from inspectd.plc.transport import Notify


class S7Transport:
    event_driven = False

    def __init__(self, cfg: S7Config, on_change: Notify) -> None:
        del on_change  # polled
        self.cfg = cfg
        self._c: snap7.AsyncClient | None = None

    async def open(self) -> None:
        if self.connected:
            return
        await self.close()
        c = snap7.AsyncClient()
        try:
            await c.connect(self.cfg.host, self.cfg.rack, self.cfg.slot, tcp_port=self.cfg.port)
        except BaseException:
            await c.disconnect()
            raise
        self._c = c

    async def read_a(self) -> list[int]:
        assert self._c is not None
        data = await self._c.db_read(self.cfg.db, 2 * self.cfg.layout.block_a, 2 * A_WORDS)
        return bytes_to_words(data)

    async def write_b(self, words: list[int]) -> None:
        assert self._c is not None
        await self._c.db_write(self.cfg.db, 2 * self.cfg.layout.block_b, words_to_bytes(words))

    async def close(self) -> None:
        if self._c is not None:
            c, self._c = self._c, None
            await c.disconnect()

    @property
    def connected(self) -> bool:
        return self._c is not None and self._c.get_connected()
