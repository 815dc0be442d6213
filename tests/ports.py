"""Loopback TCP ports for the real peers the tests start (brokers, PLC servers, OPC UA, metrics)."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick; a peer then binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Readiness by TCP connect (a peer that prints 'listening' first could still race the bind)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
