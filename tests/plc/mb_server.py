"""pymodbus' own Modbus TCP server playing the PLC's MB_SERVER: 1000 holding registers, unit 1, 127.0.0.1.

usage: mb_server.py PORT      runs until SIGTERM
"""

from __future__ import annotations

import asyncio
import signal
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


async def main(port: int) -> None:
    dev = SimDevice(id=1, simdata=[SimData(0, count=1000, values=0, datatype=DataType.REGISTERS)])
    srv = ModbusTcpServer(dev, address=("127.0.0.1", port))
    await srv.serve_forever(background=True)
    print(f"pymodbus server listening on 127.0.0.1:{port}", flush=True)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    await srv.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
