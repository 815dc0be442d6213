#!/usr/bin/env python3
"""Keep-warm on the GPU: the first part after a pause without parts, with and without `watchdog.keep_warm_s`,
through the real pipeline (inspectd.bench.after_pauses) on the stations of tools/bench_gpu_models.py.

    python tools/bench_gpu_keepwarm.py [--models demo_disc light_resnet50] [--variants cuda cuda_tf32_graph]
                                       [--pauses 1 5 20] [--repeats 2] [--keep-warm 0.5]
                                       [--cpu-dma-latency US] [--out DIR]

One row per (model, variant, keep-warm off/on, pause): the first part's e2e, preprocess and infer ms (median of
the repeats, then the worst) against the steady state just before the pause. DIR gets bench_gpu_keepwarm.json and,
with matplotlib, bench_gpu_keepwarm.png. Needs onnxruntime-gpu and pycuda for the GPU variants
(tests/gpu/device_ort.sh sets them up on the GPU machine); the cpu variant runs anywhere. --cpu-dma-latency holds a
Linux PM QoS request on /dev/cpu_dma_latency (root) while it runs: whether the pause's cost is the CPUs' idle states.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_gpu_models import VARIANTS, variant_station  # noqa: E402
from bench_models import available  # noqa: E402

from inspectd.bench import after_pauses  # noqa: E402
from inspectd.config.load import load_config  # noqa: E402


def summary(parts: list[dict], pause: float) -> dict:
    """The parts after pauses of `pause` s: each figure's median and worst over the repeats."""
    at = [p for p in parts if p["pause_s"] == pause]
    out: dict = {"pause_s": pause, "n": len(at), "failsafes": sum(p["outcome"] == "failsafe" for p in at)}
    for key in ("e2e_ms", "preprocess_ms", "infer_ms", "steady_e2e_ms", "steady_preprocess_ms", "steady_infer_ms"):
        values = [p[key] for p in at if key in p]
        if values:
            out[key] = {"median": float(np.median(values)), "max": float(max(values))}
    return out


@contextlib.contextmanager
def cpu_dma_latency(us: int | None):
    """While open, the kernel keeps every CPU out of idle states slower to leave than `us` (PM QoS)."""
    if us is None:
        yield
        return
    fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    try:
        os.write(fd, struct.pack("i", us))
        yield
    finally:
        os.close(fd)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stations = sorted({(r["model"], r["variant"]) for r in rows})
    cols = min(3, len(stations))
    rows_n = -(-len(stations) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
    for ax in axes.flat[len(stations):]:
        ax.set_visible(False)
    for ax, (model, variant) in zip(axes.flat, stations, strict=False):
        for mode, colour in (("off", "tab:red"), ("on", "tab:green")):
            r = next((r for r in rows if (r["model"], r["variant"], r["keep_warm"]) == (model, variant, mode)), None)
            if r is None:
                continue
            xs = [s["pause_s"] for s in r["pauses"]]
            ax.plot(xs, [s["e2e_ms"]["median"] for s in r["pauses"]], "o-", color=colour,
                    label=f"first part, keep-warm {mode}")
            ax.vlines(xs, [s["e2e_ms"]["median"] for s in r["pauses"]], [s["e2e_ms"]["max"] for s in r["pauses"]],
                      color=colour, alpha=0.5)
            ax.plot(xs, [s["steady_e2e_ms"]["median"] for s in r["pauses"]], "--", color=colour, alpha=0.6,
                    label=f"steady before the pause ({mode})")
        ax.set_xscale("log")
        ax.set_xlabel("pause without parts (s)")
        ax.set_ylabel("trigger to verdict (ms)")
        ax.set_title(f"{model} / {variant}")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.suptitle("First part after a pause: median of the repeats, bar up to the worst")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["demo_disc", "light_resnet50"])
    ap.add_argument("--variants", nargs="*", default=["cuda", "cuda_tf32_graph"], choices=list(VARIANTS))
    ap.add_argument("--pauses", nargs="*", type=float, default=[1.0, 5.0, 20.0])
    ap.add_argument("--repeats", type=int, default=2, help="pauses of each length, in turn")
    ap.add_argument("--keep-warm", type=float, default=0.5, help="watchdog.keep_warm_s of the 'on' rows")
    ap.add_argument("--cpu-threads", type=int, default=8, help="intra-op threads of the cpu variant")
    ap.add_argument("--cpu-dma-latency", type=int, default=None, metavar="US",
                    help="hold this PM QoS request (microseconds; root) while measuring")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with cpu_dma_latency(args.cpu_dma_latency):
        rows = measure(args)
    if args.out:
        (args.out / "bench_gpu_keepwarm.json").write_text(json.dumps(rows, indent=2))
        try:
            plot(rows, args.out / "bench_gpu_keepwarm.png")
        except ImportError:
            print("matplotlib not installed: no plot", flush=True)
    return 0


def measure(args: argparse.Namespace) -> list[dict]:
    pauses = [p for _ in range(args.repeats) for p in args.pauses]
    rows = []
    print(f"{'model':16} {'variant':16} {'keep-warm':>9} {'pause s':>7} {'e2e med/max':>13} "
          f"{'pre med':>7} {'infer med/max':>13} {'steady e2e/pre/infer':>22} {'fs':>3}", flush=True)
    for name, path in available(args.models, width=16):
        for variant in args.variants:
            for mode, every in (("off", None), ("on", args.keep_warm)):
                with tempfile.TemporaryDirectory() as tmp:
                    try:
                        cfg = load_config(variant_station(path, Path(tmp), variant, args.cpu_threads))
                        got = after_pauses(cfg, pauses, every)
                    except Exception as e:  # one broken station must not hide the others' figures
                        print(f"{name:16} {variant:16} {mode:>9} FAILED: {type(e).__name__}: {e}", flush=True)
                        continue
                row = {"model": name, "variant": variant, "keep_warm": mode, "keep_warm_s": every,
                       "keep_warm_runs": got["keep_warm_runs"], "parts": got["parts"],
                       "pauses": [summary(got["parts"], p) for p in args.pauses]}
                rows.append(row)
                for s in row["pauses"]:
                    e, i = s["e2e_ms"], s["infer_ms"]
                    pre, steady_e2e, steady_pre, steady_inf = (
                        s.get(k, {}).get("median", float("nan"))
                        for k in ("preprocess_ms", "steady_e2e_ms", "steady_preprocess_ms", "steady_infer_ms"))
                    print(f"{name:16} {variant:16} {mode:>9} {s['pause_s']:7.1f} {e['median']:6.2f}/{e['max']:6.2f} "
                          f"{pre:7.2f} {i['median']:6.2f}/{i['max']:6.2f} "
                          f"{steady_e2e:6.2f}/{steady_pre:6.2f}/{steady_inf:6.2f} "
                          f"{s['failsafes']:3d}", flush=True)
                print(f"{'':16} {'':16} {mode:>9} keep-warm inferences: {got['keep_warm_runs']}", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
