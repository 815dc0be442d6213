#!/usr/bin/env python3
"""What a loaded GPU session's first run costs on a second thread (the pipeline's inference thread at a start or a
reload): ONNX Runtime's CUDA provider creates its per-thread handles there and, with `cuda_graph`, captures that
thread's graph. Per model, cuDNN algorithm search and graph setting: the load + self-check time, then the first four
runs on a new thread (ms).

    python tools/bench_thread_first_run.py [--models demo_disc light_resnet50]

Needs onnxruntime-gpu and pycuda (tests/gpu/device_ort.sh sets them up on the GPU machine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_gpu_models import variant_station  # noqa: E402
from bench_models import available  # noqa: E402

from inspectd.config.load import load_config  # noqa: E402
from inspectd.pipeline.runtime import build_runtime  # noqa: E402


def first_runs(model: Path, algo: str, graph: bool, runs: int = 4) -> tuple[float, list[float]]:
    """(load + self-check ms on this thread, each of the first `runs` runs' ms on a new thread)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = variant_station(model, Path(tmp), "cuda_graph" if graph else "cuda", 1)
        station = yaml.safe_load(path.read_text())
        station["backend"]["providers"] = [{"name": "cuda", "cuda_graph": graph, "cudnn_conv_algo_search": algo}]
        path.write_text(yaml.safe_dump(station))
        cfg = load_config(path)
        t0 = time.perf_counter()
        rt = build_runtime(cfg.station, cfg.products[cfg.station.product])
        load = (time.perf_counter() - t0) * 1e3
        spec = rt.product.model.input
        x = np.zeros((1, spec.channels, spec.height, spec.width), np.float32)
        times: list[float] = []

        def run() -> None:
            for _ in range(runs):
                t = time.perf_counter()
                rt.backend.infer(x)
                times.append((time.perf_counter() - t) * 1e3)

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        rt.close()
        return load, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["demo_disc", "light_resnet50"])
    args = ap.parse_args()
    for name, path in available(args.models, width=15):
        for algo in ("exhaustive", "heuristic", "default"):
            for graph in (False, True):
                load, times = first_runs(path, algo, graph)
                print(f"{name:15} {algo:10} graph={graph!s:5} load+selfcheck {load:7.1f} ms; second thread runs ms "
                      f"{[round(t, 2) for t in times]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
