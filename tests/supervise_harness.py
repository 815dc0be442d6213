"""The systemd side of the daemon, for tests: a real NOTIFY_SOCKET and the daemon as a real subprocess.

NotifySocket binds an AF_UNIX datagram socket (filesystem or abstract) and reads what the daemon sends,
with the sender's pid from SCM_CREDENTIALS, as systemd does for NotifyAccess=main. DaemonProcess starts
`python -m inspectd.cli run` with NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID set as systemd sets them
(WATCHDOG_PID is the daemon's own pid: a shell exports $$ and execs Python, keeping that pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_S = 90.0  # model load + golden gate on a shared 2-core machine; generous, only a bound


@dataclass(frozen=True)
class Message:
    t: float  # time.monotonic() when received
    pid: int  # sender, from SCM_CREDENTIALS
    fields: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.fields if k == key), None)

    def has(self, key: str) -> bool:
        return self.get(key) is not None


class NotifySocket:
    """Receives on its own thread, so each message is stamped when it arrives, not when a test looks."""

    def __init__(self, folder: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"inspectd-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = folder / "notify.sock"
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.sock.settimeout(0.1)
        self.messages: list[Message] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            except OSError:
                return
            t = time.monotonic()
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            fields = tuple(tuple(line.split("=", 1)) for line in data.decode().split("\n") if "=" in line)
            with self._cv:
                self.messages.append(Message(t, pid, fields))  # type: ignore[arg-type]
                self._cv.notify_all()

    def wait_for(self, pred: Callable[[Message], bool], timeout: float,
                 alive: Callable[[], bool] = lambda: True, since: int | None = None) -> Message | None:
        """The first message matching `pred` among those from index `since` (default: from now on), or None
        after `timeout` or once `alive` says the sender is gone."""
        end = time.monotonic() + timeout
        with self._cv:
            i = len(self.messages) if since is None else since
            while True:
                while i < len(self.messages):
                    if pred(self.messages[i]):
                        return self.messages[i]
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or not alive():
                    return None
                self._cv.wait(min(left, 0.2))

    def settle(self, quiet_s: float = 0.3) -> None:
        """Let messages already sent arrive (after the sender exited, say)."""
        time.sleep(quiet_s)

    def close(self) -> None:
        self._closed = True
        self._thread.join(1)
        self.sock.close()


class DaemonProcess:
    def __init__(self, station: Path, notify: NotifySocket | None, watchdog_usec: int | None = None,
                 module: str = "inspectd.cli", env: dict[str, str] | None = None) -> None:
        full = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        full.update(env or {})
        if notify is not None:
            full["NOTIFY_SOCKET"] = notify.env_value
        if watchdog_usec is not None:
            full["WATCHDOG_USEC"] = str(watchdog_usec)
        argv = [sys.executable, "-m", module, "run", "--config", str(station)]
        # `exec` keeps the shell's pid, so $$ is the daemon's pid, which systemd puts in WATCHDOG_PID.
        script = '[ -n "$WATCHDOG_USEC" ] && [ -z "$WATCHDOG_PID" ] && export WATCHDOG_PID=$$; exec "$@"'
        self.proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", *argv], cwd=ROOT, env=full,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, buf: list[str]) -> None:
        for line in stream:
            buf.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(5)
        return rc

    def events(self, name: str | None = None) -> list[dict]:
        """JSON log events on stdout (optionally only those named `name`)."""
        out = []
        for line in list(self.out):
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if isinstance(ev, dict) and (name is None or ev.get("event") == name):
                    out.append(ev)
        return out

    def wait_event(self, name: str, timeout: float, after: int = 0) -> dict | None:
        """The first `name` event beyond the first `after` of them."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.events(name)
            if len(found) > after:
                return found[after]
            if not self.alive():
                break
            time.sleep(0.05)
        found = self.events(name)
        return found[after] if len(found) > after else None

    def stderr(self) -> str:
        return "".join(self.err)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)


def journal_rows(path: Path) -> list[dict]:
    db = sqlite3.connect(str(path))
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM verdicts ORDER BY id")]
    finally:
        db.close()


def parts_in_status(msg: Message) -> int:
    """`parts=N` from a STATUS= line."""
    status = msg.get("STATUS") or ""
    field = next((w for w in status.split() if w.startswith("parts=")), "parts=-1")
    return int(field.split("=", 1)[1])
