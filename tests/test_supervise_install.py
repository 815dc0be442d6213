"""Installing as the README says, and the units side by side under a real systemd.

tools/install_config.py copies a station with its products, models and golden images so every path resolves
from the installed place, and points journal and archive into the unit's state directory. Under the real
`systemd --user` (tests/test_supervise_systemd.py's manager): inspectd.service and two inspectd@ instances run at
once, each with its own state and logs directory and journal; a reload to another product is named in STATUS.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.supervise_harness import ROOT, journal_rows
from tests.test_supervise_systemd import NEEDS, SYSTEMD, UserManager, manager  # noqa: F401  (fixture)

sys.path.insert(0, str(ROOT / "tools"))
from install_config import install

DROP_IN = """[Service]
# The shipped ExecStart with this checkout's Python for /usr/local/bin/inspectd: same config and journal paths.
ExecStart=
ExecStart={exec_start}
WorkingDirectory={root}
StandardOutput=append:{base}/%n.log
StandardError=inherit
# A user manager runs everything as its own user: no dynamic (or per-instance) user, and this machine's Python
# lives under /root (ProtectHome would hide it).
DynamicUser=no
User=
ProtectHome=no
# This container refuses the /proc/sys, /sys and /proc/kmsg remounts these need (exit 226/NAMESPACE).
ProtectKernelTunables=no
ProtectKernelLogs=no
{private_tmp}"""


def _installed(dest: Path, state: Path, port: int) -> Path:
    install(ROOT / "configs" / "demo" / "station.yaml", dest, state)
    station = dest / "station.yaml"
    doc = yaml.safe_load(station.read_text())
    doc["metrics"] = {"port": port}  # each station its own port, as the README asks
    doc["camera"]["bank"] = 8
    station.write_text(yaml.safe_dump(doc, sort_keys=False))
    return station


def test_install_config_keeps_every_path_resolvable(tmp_path: Path) -> None:
    from inspectd.config.load import load_config

    written = install(ROOT / "configs" / "demo" / "station.yaml", tmp_path / "etc", tmp_path / "state")
    assert any("models/demo_disc.onnx" in w for w in written)
    cfg = load_config(tmp_path / "etc" / "station.yaml")
    model = cfg.products["disc-a"].model.path
    assert model == (tmp_path / "etc" / "models" / "demo_disc.onnx") and model.is_file()
    assert (model.stat().st_mode & 0o777) == 0o644
    assert cfg.station.journal.path == tmp_path / "state" / "journal.sqlite"
    assert cfg.station.archive.path == tmp_path / "state" / "archive"
    text = (tmp_path / "etc" / "products" / "disc-a.yaml").read_text()
    assert "# Product recipe: machined disc" in text  # the technician's comments come along
    # what the README's old `cp -r configs/demo/* /etc/inspectd/` did: the recipe's model is not found
    shutil.copytree(ROOT / "configs" / "demo", tmp_path / "cp")
    from inspectd.errors import ConfigError
    with pytest.raises(ConfigError, match=r"demo_disc\.onnx"):
        load_config(tmp_path / "cp" / "station.yaml")


def test_status_after_a_reload_names_the_new_product(tmp_path: Path, supervised) -> None:
    """READY=1 after a reload carries STATUS: it names the product the reload switched to, not the old one."""
    station = _installed(tmp_path / "etc", tmp_path / "state", 0)
    doc = yaml.safe_load(station.read_text())
    doc["metrics"] = {"enabled": False}
    station.write_text(yaml.safe_dump(doc, sort_keys=False))
    b = (tmp_path / "etc" / "products" / "disc-a.yaml").read_text().replace("name: disc-a", "name: disc-b")
    (tmp_path / "etc" / "products" / "disc-b.yaml").write_text(b.replace("plc_id: 1", "plc_id: 2"))
    notify, daemon = supervised(station)
    assert notify.wait_for(lambda m: m.has("READY"), 90, daemon.alive, since=0), daemon.stderr()[-2000:]
    station.write_text(station.read_text().replace("product: disc-a", "product: disc-b"))
    mark = len(notify.messages)
    daemon.signal(signal.SIGHUP)
    ready = notify.wait_for(lambda m: m.has("READY"), 60, daemon.alive, since=mark)
    assert ready is not None, daemon.stderr()[-2000:]
    assert (ready.get("STATUS") or "").startswith("product=disc-b "), ready.get("STATUS")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


@pytest.mark.slow
@pytest.mark.skipif(not all(NEEDS), reason="needs root, systemd, unshare and nsenter (util-linux)")
def test_both_units_and_two_instances_run_side_by_side(manager: UserManager) -> None:  # noqa: F811
    base = manager.base
    version = int(manager.systemctl("--version").stdout.split()[1])
    # %S of a user manager: $XDG_STATE_HOME since systemd 254, $XDG_CONFIG_HOME before (252 here)
    config, units = base / "config", base / "config" / "systemd" / "user"
    state = base / ("state" if version >= 254 else "config")
    # %E/inspectd and %E/inspectd/LINE as the units read them; state in %S/inspectd and %S/inspectd-LINE
    _installed(config / "inspectd", state / "inspectd", 19301)
    for i, line in enumerate(("line1", "line2")):
        _installed(config / "inspectd" / line, state / f"inspectd-{line}", 19302 + i)
    private_tmp = "PrivateTmp=no\n" if ROOT.is_relative_to("/tmp") else ""
    for unit in ("inspectd.service", "inspectd@.service"):
        shipped = (ROOT / "systemd" / unit).read_text()
        [exec_start] = [ln.split("=", 1)[1] for ln in shipped.splitlines() if ln.startswith("ExecStart=")]
        (units / f"{unit}.d").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "systemd" / unit, units)
        (units / f"{unit}.d" / "test.conf").write_text(DROP_IN.format(
            exec_start=exec_start.replace("/usr/local/bin/inspectd", f"{sys.executable} -m inspectd.cli"),
            root=ROOT, base=base, private_tmp=private_tmp))
    assert manager.systemctl("daemon-reload").returncode == 0
    names = ["inspectd.service", "inspectd@line1.service", "inspectd@line2.service"]

    def logs() -> str:
        return "\n".join(p.read_text()[-2000:] for p in base.glob("*.log"))

    started = manager.systemctl("start", *names, timeout=240)
    assert started.returncode == 0, started.stderr + logs()
    envs = {}
    for name in names:
        up = manager.show(name, "ActiveState", "SubState", "MainPID", "StatusText")
        assert (up["ActiveState"], up["SubState"]) == ("active", "running"), (name, up, logs())
        assert up["StatusText"].startswith("product=disc-a parts=")
        environ = Path(f"/proc/{up['MainPID']}/environ").read_text().split("\0")
        envs[name] = dict(kv.split("=", 1) for kv in environ if "=" in kv)
    # each its own state and logs directory, none inside another's
    dirs = {name: (env["STATE_DIRECTORY"], env["LOGS_DIRECTORY"]) for name, env in envs.items()}
    assert dirs == {"inspectd.service": (str(state / "inspectd"), str(state / "log" / "inspectd")),
                    "inspectd@line1.service": (str(state / "inspectd-line1"), str(state / "log" / "inspectd-line1")),
                    "inspectd@line2.service": (str(state / "inspectd-line2"), str(state / "log" / "inspectd-line2"))}

    # a reload of one instance switches its product and says so; the others are untouched
    line1 = config / "inspectd" / "line1"
    b = (line1 / "products" / "disc-a.yaml").read_text().replace("name: disc-a", "name: disc-b")
    (line1 / "products" / "disc-b.yaml").write_text(b.replace("plc_id: 1", "plc_id: 2"))
    (line1 / "station.yaml").write_text((line1 / "station.yaml").read_text().replace("product: disc-a",
                                                                                    "product: disc-b"))
    assert manager.systemctl("reload", "inspectd@line1").returncode == 0
    end = time.monotonic() + 60
    while time.monotonic() < end and not manager.show("inspectd@line1", "StatusText")["StatusText"].startswith(
            "product=disc-b"):
        time.sleep(0.2)
    assert manager.show("inspectd@line1", "StatusText")["StatusText"].startswith("product=disc-b"), logs()
    assert manager.show("inspectd@line2", "StatusText")["StatusText"].startswith("product=disc-a")

    time.sleep(2)  # some parts through each
    assert manager.systemctl("stop", *names, timeout=120).returncode == 0
    for name in names:
        stopped = manager.show(name, "ActiveState", "ExecMainStatus", "Result")
        assert stopped == {"ActiveState": "inactive", "ExecMainStatus": "0", "Result": "success"}, (name, logs())
    for d in ("inspectd", "inspectd-line1", "inspectd-line2"):
        rows = journal_rows(state / d / "journal.sqlite")
        assert rows and {r["run_id"] for r in rows} and len({r["run_id"] for r in rows}) == 1
    products = {r["product"] for r in journal_rows(state / "inspectd-line1" / "journal.sqlite")}
    assert "disc-b" in products
    # the archive (journal and archive under the state directory, writable under ProtectSystem=strict)
    assert "archive_suspended" not in logs()
    assert list((state / "inspectd" / "archive").rglob("*.jpg"))
