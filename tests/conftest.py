"""Shared fixtures: a station folder built in tmp_path from the demo recipe, with overrides."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.onnx_models import brightness_model
from tests.supervise_harness import DaemonProcess, NotifySocket

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo"
DEMO_MODEL = ROOT / "engines" / "demo_disc.onnx"


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        same_kind = isinstance(out.get(k), dict) and out[k].get("type") == v.get("type", out[k].get("type")) \
            if isinstance(v, dict) else False  # another plugin type replaces the section
        out[k] = _merge(out[k], v) if same_kind else v
    return out


def write_station(folder: Path, station: dict[str, Any] | None = None, product: dict[str, Any] | None = None,
                  model: Path | None = None) -> Path:
    """Demo station + disc-a recipe under `folder`, with `station`/`product` overrides merged in."""
    st = yaml.safe_load((DEMO / "station.yaml").read_text())
    pr = yaml.safe_load((DEMO / "products" / "disc-a.yaml").read_text())
    st["journal"] = {"path": str(folder / "journal.sqlite")}
    st["archive"] = {"path": str(folder / "archive")}
    st["metrics"] = {"enabled": False}
    pr["model"]["path"] = str(model or (DEMO_MODEL if DEMO_MODEL.exists() else brightness_model(folder / "b.onnx")))
    st = _merge(st, station or {})
    pr = _merge(pr, product or {})
    (folder / "products").mkdir(parents=True, exist_ok=True)
    (folder / "products" / "disc-a.yaml").write_text(yaml.safe_dump(pr, sort_keys=False))
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(st, sort_keys=False))
    return path


@pytest.fixture
def station_file(tmp_path: Path) -> Path:
    return write_station(tmp_path, {"camera": {"bank": 8}})


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., tuple[NotifySocket, DaemonProcess]]]:
    """supervised(station, abstract=False, **DaemonProcess options): a NOTIFY_SOCKET in tmp_path and the daemon
    reporting to it, as under systemd. After the test each daemon is killed if it still runs and each socket
    closed."""
    sockets: list[NotifySocket] = []
    daemons: list[DaemonProcess] = []

    def start(station: Path, abstract: bool = False, **daemon: Any) -> tuple[NotifySocket, DaemonProcess]:
        sockets.append(NotifySocket(tmp_path, abstract=abstract))
        daemons.append(DaemonProcess(station, sockets[-1], **daemon))
        return sockets[-1], daemons[-1]

    yield start
    for d in daemons:
        d.kill()
    for n in sockets:
        n.close()
