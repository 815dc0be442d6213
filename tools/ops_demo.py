"""Operations demo: run the daemon on the demo station, scrape /metrics, archive rejects, write the shift report.

    .venv/bin/python tools/ops_demo.py --parts 600

Outputs in tools/reports/: ops_shift_report.png (inspectd report's plot), ops_shift_report.txt (its
table), ops_archive_reject.jpg (an archived reject as the archive drew it), ops_metrics.txt (a scrape).
Uses engines/demo_disc.onnx (the test suite's brightness model where it has not been trained).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspectd.config.load import load_config  # noqa: E402 (after the path fix above)
from inspectd.daemon import Daemon, Options  # noqa: E402
from tests.conftest import write_station  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "tools" / "reports")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="inspectd-ops-"))
    station = write_station(work, {"camera": {"bank": 64, "rate_hz": 50}, "metrics": {"enabled": True, "port": 0},
                                   "archive": {"enabled": True, "sample_pass": 0.02}, "log": {"every_part": False}})
    d = Daemon(load_config(station), Options(handle_signals=False, max_parts=args.parts))
    d.start()
    try:
        while d.journal.written < args.parts:
            time.sleep(0.1)
        time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics.server.port}/metrics", timeout=5) as r:
            scrape = r.read().decode()
    finally:
        d.shutdown()
    (args.out / "ops_metrics.txt").write_text(
        "".join(line + "\n" for line in scrape.splitlines() if not line.startswith("#") and "_created" not in line))
    rejects = sorted((work / "archive" / "disc-a").glob("*_reject.jpg"))
    if rejects:
        shutil.copy(rejects[len(rejects) // 2], args.out / "ops_archive_reject.jpg")
    report = subprocess.run([sys.executable, "-m", "inspectd.cli", "report", "--journal", str(work / "journal.sqlite"),
                             "--since", "1h", "--utc", "--budget-ms", str(d.config.station.cycle_budget_ms),
                             "--png", str(args.out / "ops_shift_report.png")], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    (args.out / "ops_shift_report.txt").write_text(report.stdout.replace(str(work), "<tmp>"))
    print(report.stdout)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
