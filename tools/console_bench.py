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


def scraper(base: str, stop: threading.Event, seen: list[int]) -> None:
    """A Prometheus-style scraper in a tight loop (the worst case: many of them, no interval)."""
    while not stop.is_set():
        try:
            urllib.request.urlopen(base + "/metrics", timeout=30).read()
            seen[0] += 1
        except OSError:
            time.sleep(0.05)


def run(work: Path, parts: int, clients: int, rate_hz: float | None, scrapers: int = 0,
        cache_s: float = 0.0) -> dict[str, float]:
    port = free_port()
    folder = work / f"c{clients}-{time.monotonic_ns()}"
    # Capacity (no rate): admission control as in `inspectd bench`, so the camera waits for the pipeline
    # instead of flooding it with overflow fail-safes.
    pipeline = {"max_in_flight": 2} if rate_hz is None else {}
    station = write_station(folder, {"camera": {"bank": 64, "rate_hz": rate_hz}, "log": {"every_part": False},
                                     "pipeline": pipeline,
                                     "metrics": {"enabled": True, "port": port, "cache_s": cache_s},
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
    scraped = [[0] for _ in range(scrapers)]
    threads = [threading.Thread(target=client, args=(base, stop, seen[i]), daemon=True) for i in range(clients)]
    threads += [threading.Thread(target=scraper, args=(base, stop, scraped[i]), daemon=True) for i in range(scrapers)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    proc.wait(timeout=600)
    took = time.monotonic() - t0
    stop.set()
    db = sqlite3.connect(folder / "journal.sqlite")
    rows = db.execute("SELECT t_verdict, latency_ms, verdict FROM verdicts ORDER BY t_verdict").fetchall()
    lat = sorted(r[1] for r in rows)
    span = rows[-1][0] - rows[0][0]
    inspected = sum(1 for r in rows if r[2] != "failsafe")
    return {"clients": clients, "scrapers": scrapers, "parts": len(rows), "parts_per_s": (len(rows) - 1) / span,
            "inspected_per_s": inspected / span, "scrapes_per_s": sum(s[0] for s in scraped) / took,
            "p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "failsafes": sum(1 for r in rows if r[2] == "failsafe"), "over_budget": sum(1 for x in lat if x > 50),
            "events_per_client": sum(s[0] for s in seen) / max(clients, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate-hz", type=float, default=100.0,
                    help="camera frame rate (parts offered per second); 0: as fast as the pipeline takes them "
                         "(capacity, with pipeline.max_in_flight 2)")
    ap.add_argument("--scrapers", type=int, default=0, help="also run with this many /metrics scrapers in a loop")
    ap.add_argument("--metrics-cache-s", type=float, default=0.0, help="metrics.cache_s for the scraper runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="inspectd-console-bench-") as tmp:
        results = []
        for _ in range(args.rounds):
            for n, k in [(0, 0), (args.clients, 0), *([(0, args.scrapers)] if args.scrapers else [])]:
                r = run(Path(tmp), args.parts, n, args.rate_hz or None, k, args.metrics_cache_s if k else 0.0)
                results.append(r)
                print(f"consoles={r['clients']:3d} scrapers={k:3d} ({r['scrapes_per_s']:.0f}/s) parts={r['parts']} "
                      f"throughput={r['parts_per_s']:.1f}/s inspected={r['inspected_per_s']:.1f}/s "
                      f"p50={r['p50_ms']:.2f} ms p99={r['p99_ms']:.2f} ms fail-safes={r['failsafes']} "
                      f"over_50ms={r['over_budget']} events/console={r['events_per_client']:.0f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
