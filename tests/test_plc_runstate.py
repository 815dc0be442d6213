"""RUN_EPOCH and RESULT_SEQ across restarts: the state file next to the journal, real processes killed with -9."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

from inspectd.plc.runstate import RunState, state_path_for, wrap

REPO = Path(__file__).resolve().parents[1]

# A process that takes `n` sequence numbers, prints each as it is handed out, then kills itself with -9.
_CHILD = """
import os, signal, sys
from pathlib import Path
from inspectd.plc.runstate import RunState
rs = RunState(Path(sys.argv[1]), block=int(sys.argv[3]))
print("epoch", rs.epoch, flush=True)
for _ in range(int(sys.argv[2])):
    print("seq", rs.next_seq(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_child(path: Path, n: int, block: int) -> tuple[int, list[int]]:
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(n), str(block)], capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert r.returncode == -signal.SIGKILL, r.stderr
    lines = [ln.split() for ln in r.stdout.splitlines()]
    return int(lines[0][1]), [int(v) for k, v in lines if k == "seq"]


def test_epoch_counts_starts_and_seq_never_repeats_across_kill9(tmp_path: Path) -> None:
    path = state_path_for(tmp_path / "journal.sqlite")
    assert path.parent == tmp_path
    seen: list[int] = []
    epochs = []
    for n in (5, 0, 37, 120, 1):  # block 16: several renewals on the helper thread, kills mid-block
        epoch, seqs = _run_child(path, n, 16)
        epochs.append(epoch)
        assert not set(seqs) & set(seen), "a RESULT_SEQ was reused after kill -9"
        assert seqs == sorted(seqs) and all(b - a == 1 for a, b in itertools.pairwise(seqs))
        assert not seen or not seqs or seqs[0] > seen[-1]
        seen += seqs
    assert epochs == list(range(1, 6))
    data = json.loads(path.read_text())
    assert data["run_epoch"] == 5 and data["seq_reserved"] >= seen[-1]


def test_epoch_and_seq_wrap_within_1_to_65535(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"run_epoch": 65535, "seq_reserved": 65534}))
    rs = RunState(path, block=4)
    assert rs.epoch == 1  # 65535 + 1 -> 1: 0 never appears
    assert [rs.next_seq() for _ in range(3)] == [65535, 1, 2]
    assert wrap(0) == 65535 and wrap(65536) == 1


def test_damaged_or_unwritable_state_file_does_not_stop_the_line(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("{not json")
    rs = RunState(path)
    assert 1 <= rs.epoch <= 65535 and 1 <= rs.next_seq() <= 65535
    assert json.loads(path.read_text())["run_epoch"] == rs.epoch  # rewritten whole
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rs2 = RunState(ro / "run.json")
        assert rs2.next_seq() >= 1
    finally:
        ro.chmod(0o700)
