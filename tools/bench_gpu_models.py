#!/usr/bin/env python3
"""`inspectd bench` on the GPU: each model through the real pipeline on the CPU provider and on ONNX Runtime's
CUDA provider (GPU preprocessing launched into the bound input), FP32 and FP16, with and without CUDA graphs.

    python tools/bench_gpu_models.py [--parts 2000] [--models demo_disc ...] [--in-flight 2]
                                     [--outputs journal,metrics,log] [--pipeline decide_thread=false ...]
                                     [--out DIR]

demo_anomaly is the anomaly recipe (configs/demo-anomaly: PatchCore score + anomaly map, 320x320 input).
One table row per (model, variant): infer p50/p99, e2e p50/p99/p99.9, efficiency against the slowest stage,
added p99 latency, the first parts' latency after start; the rows also go to DIR/bench_gpu_models.json.
Needs onnxruntime-gpu and pycuda (tests/gpu/device_ort.sh sets them up on the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_models import available, recipe_for, station_for  # noqa: E402

from inspectd.bench import bench_config, run_pipeline  # noqa: E402
from inspectd.config.load import load_config  # noqa: E402
from inspectd.engines.fp16 import convert_fp16  # noqa: E402
from inspectd.log import setup_logging  # noqa: E402

VARIANTS = {  # name -> (providers, preprocess, fp16)
    "cpu": (["cpu"], "cpu", False),
    "cuda": (["cuda"], "gpu", False),
    "cuda_graph": ([{"name": "cuda", "cuda_graph": True}], "gpu", False),
    "cuda_fp16": (["cuda"], "gpu", True),
    "cuda_fp16_graph": ([{"name": "cuda", "cuda_graph": True}], "gpu", True),
    # TF32 (Ampere+): FP32 weights, convolutions and matmuls at ~1e-3 relative error (PyTorch's default for convs)
    "cuda_tf32": ([{"name": "cuda", "tf32": True}], "gpu", False),
    "cuda_tf32_graph": ([{"name": "cuda", "tf32": True, "cuda_graph": True}], "gpu", False),
}


def variant_station(model: Path, folder: Path, variant: str, cpu_threads: int,
                    pipeline: dict | None = None) -> Path:
    providers, preprocess, fp16 = VARIANTS[variant]
    if fp16:
        model = convert_fp16(model, folder / f"{model.stem}.fp16.onnx").out
    path = station_for(model, folder, recipe_for(model))
    station = yaml.safe_load(path.read_text())
    station["backend"] = {"type": "onnxruntime", "providers": providers,
                          "intra_op_threads": cpu_threads if variant == "cpu" else 1}
    station["preprocess"] = preprocess
    station["cycle_budget_ms"] = 50  # the demo budget: first parts after start must meet it too
    station["pipeline"] = {**station.get("pipeline", {}), **(pipeline or {})}
    path.write_text(yaml.safe_dump(station))
    return path


def idle(r: dict) -> str:
    """The slowest stage's mean idle time per part: waiting for its next part, and for its own wake-up."""
    b = r.get("overhead_breakdown_ms", {})
    starved = next((v["mean"] for k, v in b.items() if k.endswith("_idle_starved")), float("nan"))
    handoff = next((v["mean"] for k, v in b.items() if k.endswith("_idle_handoff")), float("nan"))
    return f"{starved * 1e3:.0f}/{handoff * 1e3:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=2000)
    ap.add_argument("--models", nargs="*",
                    default=["demo_disc", "demo_anomaly", "efficientnet_lite0", "light_resnet50"])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--cpu-threads", type=int, default=8, help="intra-op threads of the CPU provider rows")
    ap.add_argument("--in-flight", type=int, default=2, help="parts admitted at once (inspectd bench --in-flight)")
    ap.add_argument("--outputs", default="", help="the daemon's verdict outputs too (inspectd bench --outputs): "
                    "journal, metrics, log (comma-separated)")
    ap.add_argument("--pipeline", nargs="*", default=[], metavar="KEY=VALUE",
                    help="station pipeline: settings for every row (YAML values), e.g. decide_thread=false")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    pipeline = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.pipeline)}
    if pipeline:
        print(f"pipeline: {pipeline}", flush=True)
    outputs = [o for o in args.outputs.split(",") if o]
    if "log" in outputs:  # verdict lines rendered at info as `inspectd run` does, into /dev/null
        setup_logging("info", out=open(os.devnull, "w"))  # noqa: SIM115  # for the whole run
    rows = []
    head = (f"{'model':18} {'variant':16} {'infer p50/p99':>14} {'e2e p50/p99/p99.9':>20} {'fps':>7} {'eff':>5} "
            f"{'add p99':>7} {'first 5 parts (ms)':>24} {'fs':>3} {'idle starved/handoff us':>23}")
    print(head, flush=True)
    for name, path in available(args.models, width=18):
        for variant in args.variants:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    station = variant_station(path, Path(tmp), variant, args.cpu_threads, pipeline)
                    cfg = bench_config(load_config(station), in_flight=args.in_flight)
                    r = run_pipeline(cfg, args.parts, warmup=50, outputs=outputs)
                except Exception as e:  # one broken variant must not hide the others' figures
                    print(f"{name:18} {variant:16} FAILED: {type(e).__name__}: {e}", flush=True)
                    continue
            r.update(model=name, variant=variant, pipeline=pipeline)
            rows.append(r)
            inf, e2e = r["stages"]["infer"], r["e2e_ms"]
            first = " ".join(f"{x:.1f}" for x in r["first_parts_e2e_ms"])
            print(f"{name:18} {variant:16} {inf['p50']:6.2f}/{inf['p99']:6.2f} "
                  f"{e2e['p50']:6.2f}/{e2e['p99']:6.2f}/{e2e['p999']:6.2f} {r['throughput_fps']:7.0f} "
                  f"{r['efficiency']:5.2f} {r['added_latency_p99_ms']:7.2f} {first:>24} "
                  f"{r['first_parts_failsafes']:3d} {idle(r):>23}", flush=True)
    if args.out:
        (args.out / "bench_gpu_models.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
