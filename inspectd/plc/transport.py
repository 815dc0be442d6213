"""What the link needs from a transport: open, read block A, write block B whole, close. All async."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Transport(Protocol):
    """One PLC connection (or, for the server, one listening socket and its datastore).

    `read_a`/`write_b` raise on any failure; the link then closes, counts and reconnects.
    Every call is wrapped in the link's timeout, so a transport need not enforce one itself.
    """

    event_driven: bool  # True: `on_change` fires when block A may have changed; no need to poll

    async def open(self) -> None: ...
    async def read_a(self) -> list[int]: ...
    async def write_b(self, words: list[int]) -> None: ...
    async def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...


Notify = Callable[[], None]  # called (from the link's loop) when the PLC wrote block A
