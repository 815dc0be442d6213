"""A running demo daemon with its console, for the console tests: two products, an operator token."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from tests.conftest import write_station
from tests.waiting import wait_until

TOKEN = "s3cret-operator-token"


@contextmanager
def console_daemon(folder: Path, token: bool = True, **station: Any) -> Iterator[tuple[Daemon, str]]:
    over: dict[str, Any] = {"camera": {"bank": 8, "defect_rate": 0.5, "rate_hz": 20},
                            "metrics": {"enabled": True, "port": 0}, "console": {"status_every_s": 0.2},
                            "log": {"every_part": False}}
    if token:
        (folder / "operator.token").write_text(TOKEN + "\n")
        over["console"]["token_file"] = "operator.token"
    over.update(station)
    path = write_station(folder, over)
    pr = yaml.safe_load((folder / "products" / "disc-a.yaml").read_text())
    pr.update(name="disc-b", plc_id=2)
    (folder / "products" / "disc-b.yaml").write_text(yaml.safe_dump(pr, sort_keys=False))
    d = Daemon(load_config(path), Options(handle_signals=False))
    t = threading.Thread(target=d.run, name="daemon-under-test", daemon=True)
    t.start()
    try:
        end = time.monotonic() + 120
        while (d.metrics is None or d.metrics.server is None or d.pipeline is None) and time.monotonic() < end:
            time.sleep(0.05)
        assert d.metrics is not None and d.metrics.server is not None, "daemon did not start its server"
        yield d, f"http://127.0.0.1:{d.metrics.server.port}"
    finally:
        d.request_stop()
        t.join(60)
        assert not t.is_alive(), "daemon did not stop"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (url, status, body[:200])
    return json.loads(body)


def post(url: str, body: dict[str, Any], token: str | None = None, who: str = "tester") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "X-Operator": who}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=150) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_for(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    return wait_until(check, timeout, what, every=0.1)
