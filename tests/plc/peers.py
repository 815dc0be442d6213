"""Peers the project did not write, run as processes on 127.0.0.1: the libmodbus server, the Snap7 servers,
tshark. Built/installed into .cache/plc/ (gitignored) on first use; stopped by their own PID only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.ports import free_port as free_port  # re-exported with wait_port: the PLC tests import them from here
from tests.ports import wait_port

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "plc"
HERE = Path(__file__).resolve().parent


class Peer:
    """A server process on one port; stop/kill/freeze act on its PID only."""

    def __init__(self, argv: list[str], port: int, name: str) -> None:
        self.argv, self.port, self.name = argv, port, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])

    def start(self, timeout: float = 15.0) -> Peer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def freeze(self) -> None:
        """SIGSTOP and wait until the kernel reports it stopped: TCP still connects, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if Path(f"/proc/{self.proc.pid}/stat").read_text().split(")")[1].split()[0] == "T":
                return
            time.sleep(0.01)
        raise TimeoutError(f"{self.name} did not stop")

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(3)


def _stale(target: Path, *sources: Path) -> bool:
    return not target.exists() or any(s.stat().st_mtime > target.stat().st_mtime for s in sources)


def lmb_server_binary() -> Path:
    """Build tests/plc/lmb_server.c against Debian's libmodbus-dev (tools/ci-deps.sh installs it)."""
    src, out = HERE / "lmb_server.c", CACHE / "lmb_server"
    if not _stale(out, src):
        return out
    if not shutil.which("gcc") or subprocess.run(["pkg-config", "--exists", "libmodbus"]).returncode:
        pytest.skip("gcc or libmodbus-dev missing (tools/ci-deps.sh installs libmodbus-dev)")
    CACHE.mkdir(parents=True, exist_ok=True)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmodbus"], capture_output=True, text=True,
                           check=True).stdout.split()
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(src), *flags], check=True)
    return out


def native_snap7_python() -> Path:
    """A separate venv holding python-snap7 2.0.2, whose wheel ships the native Snap7 library."""
    venv = CACHE / "venv-snap7-native"
    py, stamp = venv / "bin" / "python", venv / ".installed-2.0.2"
    if stamp.exists():
        return py
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "python-snap7==2.0.2"], capture_output=True,
                       text=True, timeout=300)
    if r.returncode:
        pytest.skip(f"cannot install python-snap7==2.0.2 for the native S7 peer: {r.stderr[-500:]}")
    stamp.touch()
    return py


def lmb_server(port: int) -> Peer:
    return Peer([str(lmb_server_binary()), str(port)], port, "lmb_server")


def pymodbus_server(port: int) -> Peer:
    return Peer([sys.executable, str(HERE / "mb_server.py"), str(port)], port, "pymodbus_server")


def s7_server(port: int, *, native: bool, db: int = 100) -> Peer:
    py = str(native_snap7_python()) if native else sys.executable
    return Peer([py, str(HERE / "s7_server.py"), str(port), str(db)], port, "s7_native" if native else "s7_python")


class Capture:
    """tshark on the loopback for one TCP port; `fields()` reads the capture back through a dissector."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.file = directory / f"cap-{port}.pcapng"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Capture:
        if not shutil.which("tshark"):
            pytest.skip("tshark missing (tools/ci-deps.sh installs it)")
        err = self.file.with_suffix(".err")
        self.proc = subprocess.Popen(["tshark", "-q", "-i", "lo", "-f", f"tcp port {self.port}", "-w", str(self.file)],
                                     stdout=subprocess.DEVNULL, stderr=err.open("w"), text=True)
        end = time.monotonic() + 15
        while time.monotonic() < end:  # dumpcap says so once the ring is open; traffic before is lost
            if "Capturing on" in err.read_text():
                time.sleep(1.0)  # the message comes before the filter is live: early packets were lost
                return self
            if self.proc.poll() is not None:
                pytest.skip(f"tshark cannot capture on lo: {err.read_text()[-300:]}")
            time.sleep(0.05)
        self.stop()
        pytest.skip("tshark did not start capturing within 15 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            time.sleep(0.3)  # let the last segments reach the ring
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)

    def fields(self, decode: list[str], display_filter: str, names: list[str]) -> list[dict[str, str]]:
        cmd = ["tshark", "-r", str(self.file), *decode, "-Y", display_filter, "-T", "fields", "-E", "separator=|"]
        for n in names:
            cmd += ["-e", n]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "LC_ALL": "C"})
        return [dict(zip(names, line.split("|"), strict=False)) for line in out.stdout.splitlines() if line]
