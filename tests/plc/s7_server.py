"""An S7 server playing the PLC: one standard-access DB on 127.0.0.1.

Runs under either python-snap7: 3.3.0's pure-Python server (the project venv) or, started with the
venv that holds python-snap7 2.0.2, the native Snap7 C++ server from that wheel.
usage: s7_server.py PORT [DB] [SIZE]     prints "listening" once it accepts connections
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
from importlib.metadata import version

import snap7
from snap7.type import SrvArea


def main() -> None:
    port = int(sys.argv[1])
    db = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    native = version("python-snap7").startswith("2.")  # 2.x wraps libsnap7.so; 3.x is pure Python
    srv = snap7.Server(log=False)
    area = (ctypes.c_ubyte * size)() if native else bytearray(size)  # what each flavour's register_area takes
    srv.register_area(SrvArea.DB, db, area)
    srv.start_to("127.0.0.1", port)
    print(f"s7 server ({'native' if native else 'python'}) DB{db} listening on 127.0.0.1:{port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    srv.stop()


if __name__ == "__main__":
    main()
