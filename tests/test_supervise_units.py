"""The sd_notify client and the stage judgement, in-process; the systemd unit files through systemd-analyze."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from inspectd.config.schema import JournalConfig, WatchdogConfig
from inspectd.errors import ExitCode
from inspectd.pipeline.stamps import StageStamp
from inspectd.supervise.systemd import Notifier
from inspectd.supervise.watchdog import Watchdog, assess

ROOT = Path(__file__).resolve().parent.parent
UNITS = ("inspectd.service", "inspectd@.service")


# ------------------------------------------------------------------------------------------ sd_notify


def _receiver(tmp_path: Path) -> socket.socket:
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(tmp_path / "n.sock"))
    rx.settimeout(2)
    return rx


def test_notifier_sends_one_datagram_per_message_and_keeps_status_on_one_line(tmp_path: Path) -> None:
    rx = _receiver(tmp_path)
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "3000000"}, pid=42)
    assert n.ready("product=a\nparts=1")
    assert rx.recv(4096) == b"READY=1\nSTATUS=product=a parts=1"
    assert n.watchdog() and rx.recv(4096) == b"WATCHDOG=1"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    reloading, stamp = rx.recv(4096).decode().split("\n")
    assert reloading == "RELOADING=1" and int(stamp.removeprefix("MONOTONIC_USEC=")) >= before
    assert n.stopping() and rx.recv(4096) == b"STOPPING=1"
    assert n.watchdog_interval_s == 1.5


def test_notifier_is_a_noop_outside_systemd_and_for_bad_addresses() -> None:
    for env in ({}, {"NOTIFY_SOCKET": "relative/path"}):
        n = Notifier.from_env(env)
        assert not n.enabled and not n.ready("x") and not n.watchdog()


def test_notifier_does_not_feed_a_watchdog_meant_for_another_process(tmp_path: Path) -> None:
    rx = _receiver(tmp_path)
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}
    assert Notifier.from_env(env, pid=8).watchdog_usec is None
    assert not Notifier.from_env(env, pid=8).watchdog()
    assert Notifier.from_env(env, pid=7).watchdog() and rx.recv(64) == b"WATCHDOG=1"
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "0"}, pid=7).watchdog_usec is None


def test_notifier_survives_a_receiver_that_went_away(tmp_path: Path) -> None:
    rx = _receiver(tmp_path)
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
    rx.close()
    (tmp_path / "n.sock").unlink()
    assert n.status("still here") is False  # logged, not raised


# ------------------------------------------------------------------------------------------ stage judgement


def _stamps(now: float) -> dict[str, StageStamp]:
    return {name: StageStamp(name, last_beat=now) for name in ("acquire", "preprocess", "infer", "decide")}


def _beat(stamps: dict[str, StageStamp], t: float, *names: str) -> None:
    """What an idle stage loop does every poll: here at time t."""
    for name in names or tuple(stamps):
        stamps[name].last_beat = t


def test_an_idle_line_that_polls_is_flowing() -> None:
    now = time.monotonic()
    assert assess(_stamps(now), now + 0.5, flow_s=1.0, stall_s=5.0).flowing


def test_a_stage_holding_a_part_past_flow_s_withholds_keepalives_then_stalls() -> None:
    now = time.monotonic()
    stamps = _stamps(now)
    stamps["infer"].busy_since, stamps["infer"].part_seq = now, 12
    assert assess(stamps, now + 0.5, 1.0, 5.0).flowing
    _beat(stamps, now + 2, "acquire", "preprocess", "decide")
    held = assess(stamps, now + 2, 1.0, 5.0)
    assert held.held == ("infer",) and held.stalled is None and not held.flowing
    _beat(stamps, now + 6, "acquire", "preprocess", "decide")
    assert assess(stamps, now + 6, 1.0, 5.0).stalled == "infer"


def test_the_busy_stage_is_blamed_not_the_one_blocked_behind_it() -> None:
    now = time.monotonic()
    stamps = _stamps(now)
    stamps["infer"].busy_since = now  # hung
    stamps["preprocess"].last_beat = now  # finished its part, now blocked putting it into infer's full queue
    stamps["acquire"].last_beat = now + 1  # still polling
    later = now + 6
    _beat(stamps, later, "acquire", "decide")
    assert assess(stamps, later, 1.0, 5.0).stalled == "infer"


def test_a_stage_thread_that_died_stalls_by_silence() -> None:
    now = time.monotonic()
    stamps = _stamps(now)
    _beat(stamps, now + 6, "acquire", "preprocess", "infer")
    assert assess(stamps, now + 6, 1.0, 5.0).stalled == "decide"


def test_watchdog_thread_feeds_systemd_while_flowing_and_reports_a_stall(tmp_path: Path) -> None:
    """The real thread with real stamps: one stage is left busy; keep-alives stop, on_stall gets it."""
    rx = _receiver(tmp_path)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "200000"})
    stamps = {"a": StageStamp("a"), "b": StageStamp("b")}
    stalls: list[tuple[str, int | None]] = []
    report = tmp_path / "report.txt"
    with report.open("w") as out:
        wd = Watchdog(stamps, stall_s=0.6, notifier=notifier, on_stall=lambda s, st: stalls.append((s, st.part_seq)),
                      period_s=0.05, flow_s=0.2, report_to=out)
        wd.start()
        for _ in range(6):  # both stages beat like idle stage loops do
            time.sleep(0.05)
            stamps["a"].idle_beat()
            stamps["b"].idle_beat()
        assert rx.recv(64) == b"WATCHDOG=1"
        stamps["b"].begin(7)
        while wd.is_alive():
            stamps["a"].idle_beat()
            time.sleep(0.02)
        wd.join(5)
    assert stalls == [("b", 7)]
    assert wd.withheld > 0
    assert "stage 'b' stalled on part 7" in report.read_text()


# ------------------------------------------------------------------------------------------ unit files


def _unit_text(name: str) -> str:
    return (ROOT / "systemd" / name).read_text()


def _settings(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in _unit_text(name).splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_unit_matches_the_daemon_contract(unit: str) -> None:
    s = _settings(unit)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    cannot_boot = {int(ExitCode.CONFIG), int(ExitCode.MODEL), int(ExitCode.GOLDEN)}
    assert {int(c) for c in s["RestartPreventExitStatus"][0].split()} == cannot_boot
    assert int(ExitCode.STALL) not in cannot_boot and s["Restart"] == ["on-failure"]
    assert int(ExitCode.DISK_FULL) not in cannot_boot  # a full journal disk is restarted: space can be freed
    # Held exits on a full disk keep 5 restarts apart by more than the start-limit interval allows in a row.
    assert JournalConfig().disk_full_wait_s * int(s["StartLimitBurst"][0]) >= int(s["StartLimitIntervalSec"][0])
    assert JournalConfig().disk_full_wait_s + 30 < int(s["TimeoutStartSec"][0])
    # The internal watchdog (stall_s) must act before systemd's, so a stall ends with its own code and stacks.
    assert float(s["WatchdogSec"][0]) > WatchdogConfig().stall_s
    assert "--journal %S/inspectd" in s["ExecStart"][0]  # /var/lib/inspectd[-LINE]/ (the state directory)
    # Explicit descriptor limit (the 1024 default was exhausted by a connection flood before the Modbus cap).
    assert int(s["LimitNOFILE"][0]) >= 4096


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (tools/ci-deps.sh installs it)")
def test_units_pass_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this checkout's entry point.
    entry = ROOT / ".venv" / "bin" / "inspectd"
    if not entry.exists():
        pytest.skip("no .venv/bin/inspectd to stand in for /usr/local/bin/inspectd")
    paths = []
    for unit in UNITS:
        target = tmp_path / unit.replace("@.", "@line1.")
        target.write_text(_unit_text(unit).replace("/usr/local/bin/inspectd", str(entry)))
        paths.append(target)
    verify = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, paths)], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    for path in paths:
        sec = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", str(path)], capture_output=True,
                             text=True, timeout=60)
        level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", sec.stdout)
        assert level is not None, sec.stdout + sec.stderr
        assert float(level.group(1)) <= 4.0


def test_units_coexist_each_instance_its_own_user_and_directories() -> None:
    """inspectd.service and inspectd@LINE on one machine: no directory of one inside another's (nested ones
    failed with 238/STATE_DIRECTORY under DynamicUser), each instance its own dynamic user, and no
    ConfigurationDirectory (systemd would create the config folder itself, owned by it)."""
    single, template = _settings("inspectd.service"), _settings("inspectd@.service")
    for key in ("StateDirectory", "LogsDirectory", "CacheDirectory"):
        assert single[key] == ["inspectd"] and template[key] == ["inspectd-%i"]
        for line in ("line1", "line2"):
            mine = template[key][0].replace("%i", line)
            assert not mine.startswith("inspectd/")  # beside inspectd.service's, not inside it
    assert template["DynamicUser"] == ["yes"] and template["User"] == ["inspectd-%i"]
    assert single["DynamicUser"] == ["yes"] and "User" not in single  # dynamic user `inspectd`
    for s in (single, template):
        assert "ConfigurationDirectory" not in s
        assert "--journal %S/" + s["StateDirectory"][0] + "/journal.sqlite" in s["ExecStart"][0]
