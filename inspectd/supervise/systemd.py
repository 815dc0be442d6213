"""sd_notify without libsystemd: one datagram per message to $NOTIFY_SOCKET; a no-op outside systemd.

The protocol (sd_notify(3)): newline-separated VAR=value assignments in one AF_UNIX datagram to the
socket named by $NOTIFY_SOCKET, a filesystem path or, with a leading '@', an abstract-namespace name.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("inspectd.systemd")

SEND_TIMEOUT_S = 1.0  # a wedged receiver must not block the watchdog thread or the main loop for long


def socket_address(path: str) -> str | None:
    """The address to send to, or None for a value sd_notify(3) would reject (it must be absolute or '@')."""
    if path.startswith("@"):
        return "\0" + path[1:]
    return path if path.startswith("/") else None


def watchdog_usec_from_env(env: Mapping[str, str], pid: int) -> int | None:
    """WATCHDOG_USEC if it is meant for this process (sd_watchdog_enabled(3): WATCHDOG_PID, when set, must match)."""
    usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None
    return int(usec)


def one_line(text: str) -> str:
    # A newline would end the assignment and start a new one: STATUS= must stay one line.
    return " ".join(text.split())


class Notifier:
    def __init__(self, socket_path: str | None, watchdog_usec: int | None) -> None:
        self.socket_path = socket_path
        self.watchdog_usec = watchdog_usec
        self._addr = socket_address(socket_path) if socket_path else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # the watchdog thread and the main loop both send
        self.sent: list[str] = []  # the last messages, for logs and in-process tests
        if socket_path and self._addr is None:
            log.warning("notify_socket_ignored", path=socket_path, why="neither absolute nor abstract ('@')")
        if self._addr is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(SEND_TIMEOUT_S)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec_from_env(env, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Keep-alive period: half of WatchdogSec, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *lines: str) -> bool:
        with self._lock:
            if self._sock is None or self._addr is None:
                return False
            try:
                self._sock.sendto("\n".join(lines).encode(), self._addr)
            except OSError as e:  # systemd gone, socket full or timed out: supervision must never crash the daemon
                log.warning("sd_notify_failed", error=str(e), message=lines[0])
                return False
            self.sent = [*self.sent[-31:], *lines]
            return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={one_line(status)}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={one_line(text)}")

    def watchdog(self) -> bool:
        # Only when the watchdog is meant for us: a process that merely inherited NOTIFY_SOCKET must not feed it.
        return self.watchdog_usec is not None and self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time in the current phase (start-up, reload, stop): loading engines can be slow."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (>= 253) tell this reload from an older one; older versions ignore it.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
