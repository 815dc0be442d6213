"""A fleet on one broker: a real Mosquitto, N synthetic stations run as `inspectd@lineN` would run them (one
process and one station folder each), and one watcher showing yield and reject reasons per station, live.

    python tools/fleet_demo.py [--stations 4] [--seconds 40] [--outage 6] [--rate-hz 10] [--json]

`--outage S` stops the broker for S seconds a third of the way in: the stations keep inspecting and journaling,
and send their backlog once it is back (store-and-forward). At the end every station is stopped (SIGTERM), and
each journal is compared with what the watcher received. Everything lives under var/fleet/ (rebuilt each run).
"""

from __future__ import annotations

import argparse
import getpass
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_watch import FleetWatch  # noqa: E402 (tools/ is not a package)

DEMO = ROOT / "configs" / "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, folder: Path, port: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join([
            f"user {getpass.getuser()}", "persistence true", f"persistence_location {folder}/",
            "max_queued_messages 1000000", "set_tcp_nodelay true", "log_dest stderr", f"listener {port} 127.0.0.1",
            "allow_anonymous true",
        ]) + "\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=log, stderr=log)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"mosquitto did not start: {self.log.read_text()[-1000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self.proc = None


def write_fleet(base: Path, n: int, port: int, rate_hz: float) -> list[Path]:
    """products/ shared by all lines (the demo's disc-a) and one folder per line."""
    products = base / "products"
    products.mkdir(parents=True)
    recipe = yaml.safe_load((DEMO / "products" / "disc-a.yaml").read_text())
    recipe["model"]["path"] = str((DEMO / "products" / recipe["model"]["path"]).resolve())
    recipe.pop("golden", None)
    (products / "disc-a.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    stations = []
    for i in range(1, n + 1):
        folder = base / f"line{i}"  # as /etc/inspectd/line{i}/ + /var/lib/inspectd/line{i}/ for inspectd@line{i}
        folder.mkdir()
        st = yaml.safe_load((DEMO / "station.yaml").read_text())
        st.update(name=f"line{i}", products_dir=str(products), product="disc-a")
        st["camera"].update(seed=i, defect_rate=round(0.04 * i, 2), rate_hz=rate_hz, bank=64)
        st["journal"] = {"path": str(folder / "journal.sqlite")}
        st["archive"] = {"enabled": False}
        st["metrics"] = {"port": 0}
        st["log"] = {"every_part": False}
        st["mqtt"] = {"host": "127.0.0.1", "port": port, "client_id": f"inspectd-line{i}", "counters_every_s": 2}
        path = folder / "station.yaml"
        path.write_text(yaml.safe_dump(st, sort_keys=False))
        stations.append(path)
    return stations


def journal_count(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])
    except sqlite3.Error:
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--rate-hz", type=float, default=10)
    ap.add_argument("--outage", type=float, default=0, help="stop the broker this many seconds mid-run")
    ap.add_argument("--port", type=int, default=0, help="broker port (0: a free one)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    base = ROOT / "var" / "fleet"
    shutil.rmtree(base, ignore_errors=True)
    port = a.port or free_port()
    broker = Broker(base / "broker", port)
    broker.start()
    print(f"mosquitto on 127.0.0.1:{port}; stations under {base}", flush=True)
    watch = FleetWatch("127.0.0.1", port).start()
    procs = []
    for path in write_fleet(base, a.stations, port, a.rate_hz):
        log = (path.parent / "daemon.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(path)],
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    names = {f"line{i}" for i in range(1, a.stations + 1)}
    ready_by = time.monotonic() + 120  # models load on every station at once
    while time.monotonic() < ready_by and {n for n, t in watch.summary().items() if t["parts"] > 0} < names:
        time.sleep(0.5)
    print(f"all {a.stations} stations inspecting", flush=True)
    t0 = time.monotonic()
    outage_at = t0 + a.seconds / 3 if a.outage else None
    try:
        while time.monotonic() - t0 < a.seconds:
            time.sleep(2)
            if outage_at is not None and time.monotonic() >= outage_at:
                print(f"\n*** broker stopped for {a.outage:.0f} s (stations keep journaling) ***", flush=True)
                broker.stop()
                time.sleep(a.outage)
                broker.start()
                print("*** broker back: stations send their backlog ***", flush=True)
                outage_at = None
            print(f"\n[{time.monotonic() - t0:5.1f} s]\n{watch.table()}", flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
    time.sleep(1.0)  # the last messages after each station's drain
    print(f"\nfinal (stations exited {codes})\n{watch.table()}")
    summary = watch.summary()
    ok = True
    for i in range(1, a.stations + 1):
        name = f"line{i}"
        journaled = journal_count(base / name / "journal.sqlite")
        got = summary.get(name, {}).get("parts", 0)
        ok &= got == journaled
        print(f"{name}: journaled {journaled}, received {got}{'' if got == journaled else '  <-- MISSING'}")
    watch.stop()
    broker.stop()
    if a.json:
        print(json.dumps(summary, indent=1))
    print("every journaled verdict reached the watcher" if ok else "LOSS: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
