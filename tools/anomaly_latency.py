"""CPU cost of an anomaly graph (`inspectd fit-anomaly`) against its memory bank size.

    .venv/bin/python tools/anomaly_latency.py [--model engines/disc-anomaly.onnx] [--banks 500 1000 2000 3000]

For each size the graph is copied with its first k bank entries (the `w` = -2 B^T and `b2` = |b|^2
initializers cut to k columns) and run by ONNX Runtime as the daemon runs it (1 intra-op thread, batch 1)
on preprocessed synthetic discs. Per inference it reports wall time and the thread's CPU time: with one
intra-op thread ONNX Runtime computes on the calling thread, so CPU time is what the inference costs on a
core of its own, and wall time adds the waits for a core on a busy machine. The load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from inspectd.camera.parts import make_part
from inspectd.config.load import load_product
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs/demo-anomaly/products/disc-anomaly.yaml"


def cut_bank(model: onnx.ModelProto, k: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name == "w":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:, :k].copy(), "w"))
        elif init.name == "b2":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:k].copy(), "b2"))
    return m


def measure(path: Path, tensors: list[np.ndarray], runs: int) -> dict[str, float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    for t in tensors[:5]:
        sess.run(None, {"input": t})
    wall, cpu = [], []
    for i in range(runs):
        t = tensors[i % len(tensors)]
        w0, c0 = time.perf_counter(), time.thread_time()
        sess.run(None, {"input": t})
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return {"wall_p50_ms": float(np.percentile(wall, 50)), "wall_p99_ms": float(np.percentile(wall, 99)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)), "cpu_p99_ms": float(np.percentile(cpu, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--banks", type=int, nargs="+", default=[500, 1000, 2000, 3000])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    product = load_product(args.recipe.resolve())
    pre = CpuPreprocessor(product.preprocess, product.model.input, ring=2)
    rng = np.random.default_rng(5)
    frames = [Frame(make_part(rng, 448, kind)[0], "Mono8", 0.0) for kind in (None, "scratch", "spot", "chip")]
    t0, c0 = time.perf_counter(), time.thread_time()
    tensors = [np.array(pre(f), copy=True) for f in frames * 25]
    pre_ms = ((time.perf_counter() - t0) * 1e3 / 100, (time.thread_time() - c0) * 1e3 / 100)
    model = onnx.load(str(product.model.path))
    out = {"model": product.model.path.name, "input": product.model.input.width, "load_avg_start": os.getloadavg(),
           "preprocess_ms": {"wall": pre_ms[0], "cpu": pre_ms[1]}, "banks": {}}
    print(f"{product.model.path.name}, input {product.model.input.width}, load average {os.getloadavg()[0]:.1f}; "
          f"preprocessing {pre_ms[0]:.2f} ms wall, {pre_ms[1]:.2f} ms CPU")
    print(f"{'bank':>6}{'MB':>7}{'wall p50':>10}{'wall p99':>10}{'CPU p50':>10}{'CPU p99':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.banks:
            path = Path(tmp) / f"bank{k}.onnx"
            onnx.save(cut_bank(model, k), str(path))
            r = measure(path, tensors, args.runs)
            r["mb"] = path.stat().st_size / 2**20
            out["banks"][k] = r
            print(f"{k:>6}{r['mb']:>7.2f}{r['wall_p50_ms']:>10.2f}{r['wall_p99_ms']:>10.2f}"
                  f"{r['cpu_p50_ms']:>10.2f}{r['cpu_p99_ms']:>10.2f}")
    out["load_avg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
