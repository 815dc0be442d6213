#!/usr/bin/env python3
"""N stations sharing one GPU, as `inspectd@` runs them: N `inspectd bench` processes at once (each its own CUDA
context, ONNX Runtime CUDA session and GPU preprocessing), against one alone.

    python tools/bench_gpu_stations.py [--model light_resnet50] [--stations 1 2 4 8] [--parts 1500] [--out DIR]

Per N: total parts/s over the stations, scaling against one station, the mean and worst station's e2e p99.
Each station's bench warms up before it measures; all N are started together and measured over their own runs
(runs of several seconds, so the start skew of a few hundred ms hardly matters).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from bench_gpu_models import variant_station  # noqa: E402
from bench_models import LIGHT  # noqa: E402


def run_stations(model: Path, n: int, parts: int, variant: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(n):
            folder = Path(tmp) / f"line{i + 1}"
            folder.mkdir()
            station = variant_station(model, folder, variant, cpu_threads=1)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "inspectd.cli", "bench", "--config", str(station), "--parts", str(parts),
                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT))
        return [json.loads(p.communicate(timeout=900)[0]) for p in procs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="light_resnet50")
    ap.add_argument("--variant", default="cuda")
    ap.add_argument("--stations", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--parts", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    model = ROOT / "engines/demo_disc.onnx" if args.model == "demo_disc" else LIGHT / f"{args.model}.onnx"
    rows, one = [], None
    print(f"{'stations':>8} {'total fps':>9} {'scaling':>7} {'fps/station':>11} {'p99 mean':>8} {'p99 worst':>9} "
          f"{'failsafes':>9}", flush=True)
    for n in args.stations:
        runs = run_stations(model, n, args.parts, args.variant)
        total = sum(r["throughput_fps"] for r in runs)
        one = one or total / n
        p99 = [r["e2e_ms"]["p99"] for r in runs]
        row = {"stations": n, "total_fps": total, "scaling": total / one, "p99_mean": sum(p99) / n,
               "p99_worst": max(p99), "failsafes": sum(r["failsafes"] for r in runs), "model": args.model,
               "variant": args.variant}
        rows.append(row)
        print(f"{n:8d} {total:9.0f} {row['scaling']:7.2f} {total / n:11.0f} {row['p99_mean']:8.2f} "
              f"{row['p99_worst']:9.2f} {row['failsafes']:9d}", flush=True)
    if args.out:
        (args.out / f"bench_gpu_stations_{args.model}.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
