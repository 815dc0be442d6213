"""Running the simulated PLC while a fault (its server killed, frozen...) strikes from another thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from tools.plc_sim import PlcSim, SimReport


def run_through(sim: PlcSim, parts: int, fault: Callable[[], None], *closers: Callable[[], object],
                join_s: float = 10.0) -> SimReport:
    """`sim.run(parts)` while `fault` runs on its own thread; then, whatever happened, the fault thread is joined
    (up to `join_s`) and `closers` are called in order (the PLC's io, the responder, the link)."""
    t = threading.Thread(target=fault)
    t.start()
    try:
        return sim.run(parts, timeout_s=60)
    finally:
        t.join(join_s)
        for close in closers:
            close()


@contextlib.contextmanager
def scanning(sim: PlcSim, timeout_s: float = 120.0) -> Iterator[SimReport]:
    """The simulated PLC running parts without end on its own thread for the `with` block (its report yielded);
    then stopped and its thread joined (up to 10 s)."""
    runner = threading.Thread(target=sim.run, args=(1_000_000,), kwargs={"timeout_s": timeout_s}, daemon=True)
    runner.start()
    try:
        yield sim.report
    finally:
        sim.stop.set()
        runner.join(10)
