"""The real daemon as a subprocess on the demo PLC station, with the `plc:` section and limits a test needs."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_station(folder: Path, plc: dict[str, Any], *, metrics_port: int | None = None) -> Path:
    station = yaml.safe_load((REPO / "configs/demo/station-plc.yaml").read_text())
    station["products_dir"] = str(REPO / "configs/demo/products")
    station["plc"] = plc
    station["journal"] = {"path": str(folder / "journal.sqlite")}  # the run-state file goes beside it
    station["archive"] = {"enabled": False}
    station["metrics"] = {"enabled": False} if metrics_port is None else {"port": metrics_port,
                                                                          "address": "127.0.0.1"}
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(station))
    return path


def start_daemon(station: Path, log: Path, *, nofile: int | None = None) -> subprocess.Popen[bytes]:
    """`inspectd run`; `nofile`: RLIMIT_NOFILE in the child, as systemd's LimitNOFILE= sets it."""
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    inspectd = Path(sys.executable).with_name("inspectd")
    with log.open("ab") as out:
        return subprocess.Popen([str(inspectd), "run", "--config", str(station)], stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=limit)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
