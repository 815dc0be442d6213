"""Signal handlers that only set flags; the daemon's main loop acts on them (gunicorn's arbiter, Patroni).

Installed first thing by `inspectd run`, before the heavy imports and model loads: without a handler a
SIGHUP or SIGTERM kills the process (status 129/143), and `systemctl reload` or a stray signal during
start-up must not. A request made while starting is acted on once the daemon is up. Standard library only,
so importing it costs nothing.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class SignalFlags:
    def __init__(self) -> None:
        self.stop = threading.Event()  # SIGTERM / SIGINT: drain and exit
        self.reload = threading.Event()  # SIGHUP: reload the configuration between parts
        self.wake = threading.Event()  # the main loop's sleep ends early on either

    def install(self) -> bool:
        """Install the handlers; False (nothing installed) when not on the main thread, where Python refuses."""
        if threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        return True

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def request_reload(self) -> None:
        self.reload.set()
        self.wake.set()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.request_reload()
