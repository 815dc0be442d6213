#!/usr/bin/env python3
"""The pipeline's own per-part overhead, side by side for several checkouts of inspectd, alternating rounds.

    .venv/bin/python tools/bench_overhead.py [--trees /work/main .] [--rounds 5] [--parts 1500]
                                             [--infer-us 400] [--size 64] [--in-flight 2] [--json out.json]

A station whose stages cost almost nothing except inference, so what is measured is the pipeline itself
(thread hand-offs, wake-ups, the deadline keeper, the verdict bus, admission pacing): a synthetic camera of
`--size` pixels, a model of the same input size whose inference takes about `--infer-us` on one ONNX Runtime CPU
thread (a chain of small matrix products; ONNX Runtime releases the GIL while it runs, as it does on a GPU),
CPU preprocessing with no resize. `--infer-us 0` leaves only the brightness graph (tens of microseconds).

Each round runs `inspectd bench --json` once per tree, in turn, in a fresh interpreter (the machine is noisy:
compare trees within a round). Per run: efficiency (throughput / slowest-stage bound), added p99 latency (e2e p99
- sum of stage medians) and, where the tree's bench reports it, the per-part overhead (e2e - that part's own stage
times) p50/p99. The table ends with each tree's median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def timed_model(path: Path, size: int, matmuls: int) -> Path:
    """logits = [0, mean(input)] (a 'defect' when the normalised image is bright) plus `matmuls` chained
    (3*size x size) @ (size x size) products whose mean, times 0, is added: inference time without effect."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([-1, size], np.int64), "rows"),
             numpy_helper.from_array(np.eye(size, dtype=np.float32) * 0.5 + 0.5 / size, "w"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["input", "axis1"], ["cmean"], keepdims=1),
             helper.make_node("GlobalAveragePool", ["cmean"], ["g"]),
             helper.make_node("Flatten", ["g"], ["z"], axis=1),
             helper.make_node("Reshape", ["input", "rows"], ["h0"])]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes += [helper.make_node("ReduceMean", [f"h{matmuls}"], ["burn"], keepdims=0),
              helper.make_node("Mul", ["burn", "zero"], ["burn0"]),
              helper.make_node("Add", ["z", "burn0"], ["zb"]),
              helper.make_node("Sub", ["zb", "zb"], ["z0"]),
              helper.make_node("Concat", ["z0", "zb"], ["logits"], axis=1)]
    graph = helper.make_graph(nodes, "timed", [x], [logits], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def infer_us(path: Path, size: int, n: int = 300) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, size, size), np.float32)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def calibrated_model(folder: Path, size: int, target_us: float) -> tuple[Path, float]:
    """The model whose inference is closest to `target_us` (0: no extra products at all)."""
    path = folder / "timed.onnx"
    if target_us <= 0:
        return timed_model(path, size, 0), infer_us(timed_model(path, size, 0), size)
    one = infer_us(timed_model(path, size, 1), size)
    two = infer_us(timed_model(path, size, 9), size)
    per = max((two - one) / 8, 1e-3)
    n = max(0, round(1 + (target_us - one) / per))
    timed_model(path, size, n)
    return path, infer_us(path, size)


def write_station(folder: Path, model: Path, size: int) -> Path:
    station = yaml.safe_load((ROOT / "configs/demo/station.yaml").read_text())
    product = yaml.safe_load((ROOT / "configs/demo/products/disc-a.yaml").read_text())
    station["camera"].update(size=size, bank=16)
    station.update(journal={"path": str(folder / "j.sqlite")}, archive={"enabled": False},
                   metrics={"enabled": False}, products_dir=str(folder / "products"))
    product["model"] = {"path": str(model), "input": {"name": "input", "width": size, "height": size},
                        "scores_output": "logits", "activation": "softmax"}
    product["preprocess"] = {"roi": {"x": 0, "y": 0, "width": size, "height": size}, "resize": "area",
                             "color": "rgb", "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (folder / "products").mkdir(parents=True, exist_ok=True)
    (folder / "products" / "disc-a.yaml").write_text(yaml.safe_dump(product))
    (folder / "station.yaml").write_text(yaml.safe_dump(station))
    return folder / "station.yaml"


def bench(tree: Path, station: Path, parts: int, in_flight: int, outputs: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # one interpreter for every tree: only the code differs
    p = subprocess.run([sys.executable, "-m", "inspectd.cli", "bench",
                        "--config", str(station), "--parts", str(parts), "--in-flight", str(in_flight), "--json",
                        *(["--outputs", outputs] if outputs else [])],
                       cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"{tree}: bench exited {p.returncode}: {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def row(r: dict) -> dict:
    over = r.get("overhead_ms", {})
    return {"eff": r["efficiency"], "add_p99": r["added_latency_p99_ms"], "e2e_p50": r["e2e_ms"]["p50"],
            "e2e_p99": r["e2e_ms"]["p99"], "infer_p50": r["stages"]["infer"]["p50"], "fps": r["throughput_fps"],
            "over_p50": over.get("p50", float("nan")), "over_p99": over.get("p99", float("nan")),
            "cpu_part": r.get("cpu_ms_per_part", float("nan")),
            "idle_starv": idle(r, "_idle_starved"), "idle_hand": idle(r, "_idle_handoff")}


def idle(r: dict, kind: str) -> float:
    """Mean ms per part the slowest stage waited for its next part (starved) or for its own wake-up (hand)."""
    return next((v["mean"] for k, v in r.get("overhead_breakdown_ms", {}).items() if k.endswith(kind)),
                float("nan"))


COLS = ("eff", "fps", "infer_p50", "e2e_p50", "e2e_p99", "add_p99", "over_p50", "over_p99", "cpu_part",
        "idle_starv", "idle_hand")


def show(label: str, r: dict) -> str:
    return f"{label:24} " + " ".join(f"{r[c]:10.3f}" if c != "fps" else f"{r[c]:10.0f}" for c in COLS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", nargs="+", type=Path, default=[ROOT], help="inspectd checkouts to compare")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parts", type=int, default=1500)
    ap.add_argument("--infer-us", type=float, default=400, help="target inference time of the model (0: minimal)")
    ap.add_argument("--size", type=int, default=64, help="frame and model input edge, pixels")
    ap.add_argument("--in-flight", type=int, default=2)
    ap.add_argument("--config", type=Path, help="bench this station instead of the generated one")
    ap.add_argument("--outputs", default="", help="inspectd bench --outputs: the daemon's journal, metrics, log")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.trees]
    with tempfile.TemporaryDirectory() as tmp:
        if args.config:
            station = args.config.resolve()
        else:
            model, took = calibrated_model(Path(tmp), args.size, args.infer_us)
            station = write_station(Path(tmp), model, args.size)
            print(f"model: {args.size}x{args.size}, inference {took:.0f} us alone", flush=True)
        print(f"{'run':24} " + " ".join(f"{c:>10}" for c in COLS), flush=True)
        runs: dict[Path, list[dict]] = {t: [] for t in trees}
        for i in range(args.rounds):
            for t in trees:
                r = row(bench(t, station, args.parts, args.in_flight, args.outputs))
                runs[t].append(r)
                print(show(f"{i + 1} {t.name}", r), flush=True)
        print("median over rounds:")
        for t in trees:
            print(show(t.name, {c: statistics.median(r[c] for r in runs[t]) for c in COLS}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({str(t): runs[t] for t in trees}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
