"""A hung stage: keep-alives stop, the stall is reported with stage, part and stacks, the process exits 70.

How the stage is made to hang, honestly and without test code in the package: this file is also a launcher.
`python -m tests.test_supervise_stall run --config X` registers HangingBackend under the `onnxruntime` type
and runs the real CLI. HangingBackend is the real ONNX Runtime backend (model load, checks, inference)
whose infer() never returns once the test creates the file named by INSPECTD_TEST_HANG_FILE (empty, or
holding the pid that must hang): what a GPU call stuck in a driver looks like to the pipeline. Everything
else (notify socket, signals, journal, watchdog, exit code) is the production path.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from inspectd.errors import ExitCode
from inspectd.infer.onnxruntime import OnnxRuntimeBackend
from tests.conftest import write_station
from tests.supervise_harness import START_S, journal_rows

HANG_ENV = "INSPECTD_TEST_HANG_FILE"


class HangingBackend(OnnxRuntimeBackend):
    def infer(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        if must_hang(Path(os.environ[HANG_ENV])):
            threading.Event().wait()  # forever, like a call that never comes back
        return super().infer(tensor)


def must_hang(flag: Path) -> bool:
    """The flag file exists and is empty or names this process (so a restarted daemon does not hang again)."""
    try:
        owner = flag.read_text().strip()
    except OSError:
        return False
    return owner in ("", str(os.getpid()))


def test_hung_stage_stops_keepalives_and_exits_with_stall_code(tmp_path: Path, supervised) -> None:
    stall_s = 4.0
    station = write_station(tmp_path, {"camera": {"bank": 8}, "watchdog": {"stall_s": stall_s}})
    hang = tmp_path / "hang"
    # WatchdogSec above stall_s, as in the unit: the internal watchdog must act first, with its own code.
    notify, daemon = supervised(station, watchdog_usec=int(2 * stall_s * 1e6), module="tests.test_supervise_stall",
                                      env={HANG_ENV: str(hang)})
    assert notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0), daemon.stderr()
    assert notify.wait_for(lambda m: m.has("WATCHDOG"), 5, daemon.alive), "no keep-alive while parts flow"

    hang.touch()
    t_hang = time.monotonic()
    rc = daemon.wait(stall_s + 30)
    notify.settle()

    assert rc == ExitCode.STALL
    # Keep-alives stopped once infer held its part past flow_s (1 s here), well before the exit.
    late = [m for m in notify.messages if m.has("WATCHDOG") and m.t > t_hang + 2.5]
    assert late == [], f"keep-alives after the stage hung: {len(late)}"
    assert all(m.pid == daemon.pid for m in notify.messages), "messages from a process other than the main one"
    status = [m.get("STATUS") for m in notify.messages if m.has("STATUS")]
    final = status[-1]
    assert final.startswith("stage infer stalled on part"), status

    # Logged: withheld keep-alives, then the stall with stage, part and stacks (stderr, written synchronously).
    withheld = daemon.events("parts_not_flowing")
    assert withheld and "infer" in withheld[0]["stages"]
    err = daemon.stderr()
    assert "stage 'infer' stalled on part" in err, err[-3000:]
    assert "in infer" in err and "test_supervise_stall.py" in err, "the hung thread's stack is missing"

    # Nothing lost: the held part and those behind it got fail-safe verdicts, flushed before the exit.
    rows = journal_rows(tmp_path / "journal.sqlite")
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert f"parts={len(rows)} journaled={len(rows)}" in final
    assert any(r["verdict"] == "failsafe" and r["reason"] == "deadline" for r in rows)


if __name__ == "__main__":  # the launcher described above
    from inspectd.cli import main
    from inspectd.infer import registry

    registry.FACTORIES["onnxruntime"] = HangingBackend
    sys.exit(main())
