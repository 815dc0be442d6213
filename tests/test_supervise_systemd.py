"""A real systemd supervising the daemon with systemd/inspectd.service.

PID 1 here is not systemd, but a user manager (`systemd --user`) runs: it only refuses to start when
/run/systemd/system is missing, so it is started in a private mount namespace with a tmpfs there
(nothing outside the namespace changes). systemctl reaches it through nsenter. The unit is the shipped
file; a drop-in changes only what this machine needs, each line with its reason. Then, through systemd:
start returns once READY=1 arrived, reload with a broken file keeps the same process serving, a hung
stage ends in exit 70 and a restart, stop exits 0, and a broken config fails without restart loops.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspectd.errors import ExitCode
from tests.conftest import write_station
from tests.supervise_harness import ROOT, journal_rows

SYSTEMD = Path("/usr/lib/systemd/systemd")
NEEDS = [os.geteuid() == 0, SYSTEMD.exists(), shutil.which("unshare"), shutil.which("nsenter")]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(NEEDS), reason="needs root, systemd, unshare and nsenter (util-linux)"),
]

DROP_IN = """[Service]
ExecStart=
ExecStart={python} -m tests.test_supervise_stall run --config {station} --journal %S/inspectd/journal.sqlite
WorkingDirectory={root}
Environment=INSPECTD_TEST_HANG_FILE={hang}
StandardOutput=append:{log}
StandardError=inherit
# This machine's Python lives under /root (pyenv): a dynamic user could not run it, ProtectHome would hide it.
DynamicUser=no
ProtectHome=no
# This container refuses the /proc/sys, /sys and /proc/kmsg remounts these need (exit 226/NAMESPACE).
ProtectKernelTunables=no
ProtectKernelLogs=no
{private_tmp}"""


class UserManager:
    def __init__(self, base: Path) -> None:
        self.base = base
        env = {**os.environ, "XDG_RUNTIME_DIR": str(base / "rt"), "XDG_CONFIG_HOME": str(base / "config"),
               "XDG_STATE_HOME": str(base / "state"), "XDG_CACHE_HOME": str(base / "cache")}
        (base / "rt").mkdir(mode=0o700)
        self.env = env
        script = "mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system && exec \"$0\" --user"
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(SYSTEMD)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def systemctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "systemctl", "--user", *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_show(self, unit: str, want: dict[str, str], timeout: float) -> dict[str, str]:
        end = time.monotonic() + timeout
        while True:
            got = self.show(unit, *want, "ExecMainStatus", "NRestarts", "StatusText", "Result")
            if all(got.get(k) == v for k, v in want.items()) or time.monotonic() > end:
                return got
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # the manager stops its units, then exits
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def manager() -> Iterator[UserManager]:
    # Not under /tmp (PrivateTmp hides it from the unit) nor /run (here, the namespace that ProtectProc= and
    # ProtectControlGroups= build does not show files added to /run after the manager started).
    (ROOT / ".cache").mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="systemd-test-", dir=ROOT / ".cache"))
    base.chmod(0o755)
    m = UserManager(base)
    try:
        end = time.monotonic() + 20
        state = ""
        while time.monotonic() < end and state not in ("running", "degraded"):
            time.sleep(0.2)
            state = m.systemctl("is-system-running", timeout=10).stdout.strip()
        if state not in ("running", "degraded"):
            pytest.skip(f"systemd --user did not come up here (state {state!r})")
        yield m
    finally:
        m.close()
        shutil.rmtree(base, ignore_errors=True)


def test_systemd_supervises_the_daemon(manager: UserManager) -> None:
    base = manager.base
    station = write_station(base / "station", {"camera": {"bank": 8}, "watchdog": {"stall_s": 2.0},
                                               "archive": {"enabled": False}})
    units = base / "config" / "systemd" / "user"
    (units / "inspectd.service.d").mkdir(parents=True)
    shutil.copy(ROOT / "systemd" / "inspectd.service", units)
    hang, log = base / "hang", base / "daemon.log"
    (units / "inspectd.service.d" / "test.conf").write_text(DROP_IN.format(
        python=sys.executable, station=station, root=ROOT, hang=hang, log=log,
        # a checkout under /tmp (e.g. a CI clone) would vanish behind the unit's private /tmp
        private_tmp="PrivateTmp=no\n" if ROOT.is_relative_to("/tmp") else ""))
    assert manager.systemctl("daemon-reload").returncode == 0

    # Start returns once READY=1 came (Type=notify), with the status line and the unit's watchdog armed.
    started = manager.systemctl("start", "inspectd.service", timeout=120)
    assert started.returncode == 0, started.stderr + (log.read_text()[-3000:] if log.exists() else "")
    up = manager.show("inspectd", "ActiveState", "SubState", "MainPID", "StatusText", "WatchdogUSec")
    assert (up["ActiveState"], up["SubState"]) == ("active", "running")
    assert up["StatusText"].startswith("product=disc-a parts=") and up["WatchdogUSec"] == "10s"
    pid = int(up["MainPID"])
    environ = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
    assert environ["WATCHDOG_USEC"] == "10000000" and environ["WATCHDOG_PID"] == str(pid)

    # Reload with a misspelt key: rejected, same process, still active and inspecting.
    good = station.read_text()
    station.write_text(good + "cycle_budget_mss: 10\n")
    assert manager.systemctl("reload", "inspectd").returncode == 0
    time.sleep(3)  # a STATUS= is sent every 2 s
    after = manager.show("inspectd", "ActiveState", "MainPID", "StatusText")
    assert (after["ActiveState"], int(after["MainPID"])) == ("active", pid)
    assert "reload_rejected" in log.read_text() and "cycle_budget_mss: unknown key" in log.read_text()
    station.write_text(good)

    # A hung stage: keep-alives stop, the daemon exits 70, systemd restarts it and it comes up again.
    hang.write_text(str(pid))
    manager.wait_show("inspectd", {"ExecMainStatus": str(int(ExitCode.STALL))}, 30)
    back = manager.wait_show("inspectd", {"SubState": "running", "NRestarts": "1"}, 60)
    assert (back["SubState"], back["NRestarts"]) == ("running", "1"), back
    new_pid = int(manager.show("inspectd", "MainPID")["MainPID"])
    assert new_pid != pid
    assert "stage 'infer' stalled on part" in log.read_text()

    # Stop: SIGTERM drains, exit 0, unit inactive with result success.
    assert manager.systemctl("stop", "inspectd").returncode == 0
    stopped = manager.show("inspectd", "ActiveState", "ExecMainStatus", "Result")
    assert stopped == {"ActiveState": "inactive", "ExecMainStatus": "0", "Result": "success"}
    [journal] = list(base.glob("**/inspectd/journal.sqlite"))
    rows = journal_rows(journal)
    runs = {r["run_id"] for r in rows}
    assert len(runs) == 2
    for run in runs:  # each run's parts numbered without gaps, each with its verdict
        seqs = [r["seq"] for r in rows if r["run_id"] == run]
        assert seqs == list(range(1, len(seqs) + 1))

    # A broken recipe cannot boot: exit 2, unit failed, and RestartPreventExitStatus keeps it from looping.
    broken = good.replace("cycle_budget_ms: 50", "cycle_budget_ms: -1")
    assert broken != good
    station.write_text(broken)
    assert manager.systemctl("start", "inspectd", timeout=120).returncode != 0
    time.sleep(5)  # longer than RestartSec=3: a restart would have happened by now
    failed = manager.show("inspectd", "ActiveState", "ExecMainStatus", "NRestarts")
    assert failed == {"ActiveState": "failed", "ExecMainStatus": str(int(ExitCode.CONFIG)), "NRestarts": "0"}
