"""Pipeline throughput and trigger->verdict latency with 0 and with N open consoles, side by side in one run.

    .venv/bin/python tools/console_bench.py --parts 3000 --clients 20 --rounds 2 --rate-hz 200

Each round starts the demo daemon as its own process (`inspectd run --max-parts`), free-run (the synthetic
camera offering `--rate-hz` parts a second, the demo's 50 ms budget), once with no console open and once with
`--clients` live streams (/api/events, what an open console page holds) plus one /api/status poll per client per
second. Throughput and
latency come from the journal the daemon wrote (verdicts per second between the first and last verdict; p50 and
p99 of latency_ms, nearest rank). Rounds alternate 0 / N so a busy shared machine hurts both alike.
"""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import write_station  # noqa: E402 (after the path fix above)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(base: str, stop: threading.Event, seen: list[int]) -> None:
    """One open console: the event stream read to the end, and a status poll each second (the gallery's cost)."""
    try:
        with urllib.request.urlopen(base + "/api/events", timeout=30) as r:
            last_poll = 0.0
            for line in r:
                if line.startswith(b"data: "):
                    json.loads(line[6:])  # a browser parses every event too
                    seen[0] += 1
                if time.monotonic() - last_poll >= 1.0:
                    urllib.request.urlopen(base + "/api/status", timeout=30).read()
                    last_poll = time.monotonic()
                if stop.is_set():
                    return
    except OSError:
        return  # the daemon stopped


def run(work: Path, parts: int, clients: int, rate_hz: float) -> dict[str, float]:
    port = free_port()
    folder = work / f"c{clients}-{time.monotonic_ns()}"
    station = write_station(folder, {"camera": {"bank": 64, "rate_hz": rate_hz}, "log": {"every_part": False},
                                     "metrics": {"enabled": True, "port": port},
                                     "console": {"max_clients": max(clients, 1)}})
    proc = subprocess.Popen([sys.executable, "-m", "inspectd.cli", "run", "--config", str(station),
                             "--max-parts", str(parts)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:  # the server starts before the models load: open the consoles first
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    stop = threading.Event()
    seen = [[0] for _ in range(clients)]
    threads = [threading.Thread(target=client, args=(base, stop, seen[i]), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    proc.wait(timeout=600)
    stop.set()
    db = sqlite3.connect(folder / "journal.sqlite")
    rows = db.execute("SELECT t_verdict, latency_ms, verdict FROM verdicts ORDER BY t_verdict").fetchall()
    lat = sorted(r[1] for r in rows)
    span = rows[-1][0] - rows[0][0]
    return {"clients": clients, "parts": len(rows), "parts_per_s": (len(rows) - 1) / span,
            "p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "failsafes": sum(1 for r in rows if r[2] == "failsafe"), "over_budget": sum(1 for x in lat if x > 50),
            "events_per_client": sum(s[0] for s in seen) / max(clients, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate-hz", type=float, default=200.0, help="camera frame rate (parts offered per second)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="inspectd-console-bench-") as tmp:
        results = []
        for _ in range(args.rounds):
            for n in (0, args.clients):
                r = run(Path(tmp), args.parts, n, args.rate_hz)
                results.append(r)
                print(f"consoles={r['clients']:3d} parts={r['parts']} throughput={r['parts_per_s']:.1f}/s "
                      f"p50={r['p50_ms']:.2f} ms p99={r['p99_ms']:.2f} ms fail-safes={r['failsafes']} "
                      f"over_50ms={r['over_budget']} events/console={r['events_per_client']:.0f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
