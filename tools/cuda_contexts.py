"""Throughput of N execution slots (stream + pinned buffers each, from inspectd.infer.cuda_buffers) on one GPU.

A batch-1 inspection model leaves most of a GPU idle, which is why one engine gets one execution context per
camera. TensorRT is not on the GPU machine, so each "inference" here is the slot's real path (pinned H2D copy,
a kernel on the slot's stream, D2H copy, event sync) with a kernel sized like a small model at batch 1: a few
thread blocks busy for about a millisecond. Needs pycuda and a CUDA device.

    python tools/cuda_contexts.py --out tools/reports   # table on stdout, cuda_contexts.png/json
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from inspectd.infer.cuda_buffers import CudaDevice, SlotPool, StreamSlot, TensorSlot

KERNEL = r"""
extern "C" __global__ void small_model(const float *x, float *y, int n, int spin) {
    // grid-stride over a 3x224x224 input with few blocks: like a batch-1 net, it cannot fill the GPU alone
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float v = x[i];
        for (int k = 0; k < spin; ++k) v = fmaf(v, 0.999999f, 1e-7f);
        y[i] = v;
    }
}
"""


def run(contexts: int, per_thread: int, spin: int, blocks: int, device: CudaDevice, kernel) -> dict:
    shape = (1, 3, 224, 224)
    n = int(np.prod(shape))
    plan = [TensorSlot("x", True, np.dtype(np.float32), shape), TensorSlot("y", False, np.dtype(np.float32), shape)]
    slots = [StreamSlot(device.cuda, plan) for _ in range(contexts)]
    pool = SlotPool(slots)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    gpu_ms: list[float] = []

    def worker() -> None:
        with device:
            for _ in range(per_thread):
                with pool.acquire() as slot:
                    def execute(handle: int, slot=slot) -> None:
                        kernel(np.intp(slot.buffers["x"].ptr), np.intp(slot.buffers["y"].ptr), np.int32(n),
                               np.int32(spin), block=(256, 1, 1), grid=(blocks, 1), stream=slot.stream)
                    slot.run({"x": x}, execute, {"y": shape})
                    gpu_ms.append(slot.last_ms)

    threads = [threading.Thread(target=worker) for _ in range(contexts)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for s in slots:
        s.free()
    done = contexts * per_thread
    return {"contexts": contexts, "inferences": done, "wall_s": wall, "per_s": done / wall,
            "round_trip_p50_ms": float(np.percentile(gpu_ms, 50)),
            "round_trip_p99_ms": float(np.percentile(gpu_ms, 99)), "peak_in_flight": pool.peak_in_use}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", default="1,2,4,8")
    ap.add_argument("--per-thread", type=int, default=200)
    ap.add_argument("--spin", type=int, default=3000, help="work per element (sets the kernel time)")
    ap.add_argument("--blocks", type=int, default=8, help="thread blocks per launch (a small model's footprint)")
    ap.add_argument("--out", type=Path, default=Path("tools/reports"))
    args = ap.parse_args()

    from pycuda.compiler import SourceModule

    device = CudaDevice(0)
    with device:
        kernel = SourceModule(KERNEL, no_extern_c=True).get_function("small_model")
        run(1, 20, args.spin, args.blocks, device, kernel)  # warm-up: module load, first launches
        rows = [run(int(c), args.per_thread, args.spin, args.blocks, device, kernel)
                for c in args.contexts.split(",")]
    device.close()
    base = rows[0]["per_s"]
    print(f"{device.name}, sm {device.compute_capability}; kernel grid {args.blocks}x256, spin {args.spin}")
    print(f"{'contexts':>8}{'inf/s':>10}{'speed-up':>10}{'p50 ms':>9}{'p99 ms':>9}{'in flight':>11}")
    for r in rows:
        print(f"{r['contexts']:>8}{r['per_s']:>10.0f}{r['per_s'] / base:>9.2f}x{r['round_trip_p50_ms']:>9.3f}"
              f"{r['round_trip_p99_ms']:>9.3f}{r['peak_in_flight']:>11}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_contexts.json").write_text(json.dumps({"gpu": device.name, "rows": rows}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    cs = [r["contexts"] for r in rows]
    ax[0].plot(cs, [r["per_s"] / base for r in rows], "o-", label="measured")
    ax[0].plot(cs, cs, "--", color="grey", label="ideal")
    ax[0].set_xlabel("execution contexts (threads)")
    ax[0].set_ylabel("throughput vs 1 context")
    ax[0].legend()
    ax[1].plot(cs, [r["round_trip_p50_ms"] for r in rows], "o-", label="p50")
    ax[1].plot(cs, [r["round_trip_p99_ms"] for r in rows], "s-", label="p99")
    ax[1].set_xlabel("execution contexts (threads)")
    ax[1].set_ylabel("event-timed round trip (ms)")
    ax[1].legend()
    fig.suptitle(f"pinned H2D + kernel + D2H per slot on {device.name}")
    fig.savefig(args.out / "cuda_contexts.png", dpi=110)


if __name__ == "__main__":
    main()
