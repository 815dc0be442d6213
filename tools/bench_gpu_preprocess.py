"""Per-frame cost of GPU preprocessing vs the OpenCV path, on the same frames (needs pycuda and a CUDA device).

    python tools/bench_gpu_preprocess.py --json var/bench_gpu_preprocess.json

For each camera format -> 224x224x3 float32 (area downscale, ImageNet mean/std):
  kernel     fused kernel alone, CUDA events around each launch, input rotated over 16 device frames
             (80+ MB, more than L2) so every launch reads its frame from device memory; median.
  kernel_l2  same frame every launch: the production case, where the H2D just left the frame in L2.
  h2d        async H2D of the ROI rows from page-locked staging, CUDA events; median.
  stage      host copy of the camera frame into the page-locked staging slot (time.perf_counter); median.
  gpu_e2e    stage + H2D + kernel into a device buffer + sync, wall clock, through GpuPreprocessor; median.
  cpu        CpuPreprocessor (OpenCV, all cores and 1 thread) on the same frames; median.
Bandwidth: kernel bytes (ROI read once + output written once) / kernel time, against the device-to-device
copy rate measured here on a 1 GiB buffer (bytes read + written). `bound` = bytes / that rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspectd.config.schema import InputSpec, Preprocess
from inspectd.preprocess import gpu_kernels as gk
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.preprocess.gpu import GpuPreprocessor, Kernel, require_cuda
from inspectd.types import Frame

CASES = [("Mono8", 2448, 2048), ("BayerRG8", 2448, 2048), ("Mono8", 1280, 1024), ("BayerRG8", 1280, 1024)]
ROTATE = 16


def frames_for(fmt: str, w: int, h: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return [np.roll(base, 13 * i, axis=1) for i in range(n)]  # distinct content, cheap to make


def event_ms(cuda, fn, n: int, stream) -> list[float]:
    start, stop = cuda.Event(), cuda.Event()
    out = []
    for i in range(n):
        start.record(stream)
        fn(i)
        stop.record(stream)
        stop.synchronize()
        out.append(stop.time_since(start))
    return out


def copy_rate(cuda, nbytes: int, reps: int = 20) -> float:
    """Device-to-device copy, (read + write) bytes per second."""
    a, b = cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes)
    cuda.memset_d8(a, 1, nbytes)
    stream = cuda.Stream()
    ms = event_ms(cuda, lambda _: cuda.memcpy_dtod_async(b, a, nbytes, stream), reps, stream)
    return 2 * nbytes / (statistics.median(ms[2:]) * 1e-3)


def bench_case(cuda, fmt: str, w: int, h: int, iters: int, variants: list[tuple[str, int | None]],
               ceiling: float) -> list[dict]:
    pp = Preprocess(resize="area", color="rgb")
    spec = InputSpec(width=224, height=224, channels=3, dtype="float32")
    host = frames_for(fmt, w, h, ROTATE)
    frames = [Frame(image=f, pixel_format=fmt, t_grab=0.0) for f in host]
    pre = GpuPreprocessor(pp, spec, ring=4, deliver="device")
    cpu = CpuPreprocessor(pp, spec, ring=2)
    results = []
    with pre.current():
        stream = cuda.Stream()
        plan = pre.kernel_for(frames[0]).plan
        dev_frames = [cuda.to_device(f) for f in host]
        dst = cuda.mem_alloc(pre.kernel_for(frames[0]).out_nbytes)
        in_bytes, out_bytes = w * h, 3 * 224 * 224 * 4
        ref = cpu(frames[0])[0].astype(np.float64)
        for variant, r in variants:
            k = Kernel(plan, rows=r, variant=variant)
            # correctness of this variant on frame 0 before timing it (poisoned output)
            cuda.memset_d8(dst, 0xFF, k.out_nbytes)
            k.launch(int(dev_frames[0]), w, int(dst), stream)
            got = np.empty(k.out_shape, np.float32)
            cuda.memcpy_dtoh_async(got, dst, stream)
            stream.synchronize()
            err = float((np.abs(got[0] - ref) / plan.gain.reshape(-1, 1, 1)).max())  # raw levels
            assert np.isfinite(got).all() and err <= gk.tolerance_levels(plan) + 1e-3, f"{variant}/{r}: {err} levels"
            for i in range(10):  # warm-up
                k.launch(int(dev_frames[i % ROTATE]), w, int(dst), stream)
            cold = event_ms(cuda, lambda i, k=k: k.launch(int(dev_frames[i % ROTATE]), w, int(dst), stream),
                            iters, stream)
            warm = event_ms(cuda, lambda _, k=k: k.launch(int(dev_frames[0]), w, int(dst), stream), iters, stream)
            results.append({"format": fmt, "frame": f"{w}x{h}", "variant": k.variant, "rows": k.rows,
                            "regs_spills": _regs(k),
                            "kernel_ms": statistics.median(cold), "kernel_l2_ms": statistics.median(warm),
                            "err_levels": err, "bytes": in_bytes + out_bytes})
        best = min(results, key=lambda x: x["kernel_ms"])
        staging = cuda.pagelocked_empty(in_bytes, np.uint8)
        h2d = event_ms(cuda, lambda i: cuda.memcpy_htod_async(dev_frames[i % ROTATE], staging, stream), iters,
                       stream)
        stage = []
        for i in range(iters):
            t0 = time.perf_counter()
            np.copyto(staging.reshape(h, w), host[i % ROTATE])
            stage.append((time.perf_counter() - t0) * 1e3)
    e2e = []
    for i in range(iters + 5):
        t0 = time.perf_counter()
        staged = pre(frames[i % ROTATE])
        with pre.current():
            staged.enqueue_into(int(dst), stream)
            stream.synchronize()
        e2e.append((time.perf_counter() - t0) * 1e3)
    cpu_ms = {}
    for threads in (cv2.getNumberOfCPUs(), 1):
        cv2.setNumThreads(threads)
        ts = []
        for i in range(max(20, iters // 10)):
            t0 = time.perf_counter()
            cpu(frames[i % ROTATE])
            ts.append((time.perf_counter() - t0) * 1e3)
        cpu_ms[threads] = statistics.median(ts[2:])
    cv2.setNumThreads(cv2.getNumberOfCPUs())
    pre.close()
    for res in results:
        res.update(h2d_ms=statistics.median(h2d), stage_ms=statistics.median(stage),
                   gpu_e2e_ms=statistics.median(e2e[5:]), cpu_ms_all_cores=cpu_ms[cv2.getNumberOfCPUs()],
                   cpu_ms_1_thread=cpu_ms[1], cpu_threads=cv2.getNumberOfCPUs(), best=res is best)
        res["gbps"] = res["bytes"] / (res["kernel_ms"] * 1e-3) / 1e9
        res["bound_ms"] = res["bytes"] / ceiling * 1e3
        res["x_bound"] = res["kernel_ms"] / res["bound_ms"]
        res["speedup_kernel"] = res["cpu_ms_all_cores"] / res["kernel_ms"]
        res["speedup_h2d_kernel"] = res["cpu_ms_all_cores"] / (res["kernel_ms"] + res["h2d_ms"])
    return results


def _regs(k: Kernel) -> str:
    return f"{k.fn.num_regs} regs, {k.fn.local_size_bytes} B local"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--variants", default="separable,gather:1,gather:2,gather:4,gather:8",
                    help="kernels to time: separable, gather:ROWS (threads per output pixel)")
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args(argv)
    dev = require_cuda(0)
    import pycuda.driver as cuda

    ctx = dev.retain_primary_context()
    ctx.push()
    try:
        ceiling = copy_rate(cuda, 1 << 30)
    finally:
        cuda.Context.pop()
    variants = [(v.split(":")[0], int(v.split(":")[1]) if ":" in v else None) for v in args.variants.split(",")]
    out = {"device": dev.name(), "copy_rate_gbps": ceiling / 1e9, "cases": []}
    print(f"{dev.name()}: device-to-device copy {ceiling / 1e9:.0f} GB/s (read+write, 1 GiB)", flush=True)
    for fmt, w, h in CASES:
        res = bench_case(cuda, fmt, w, h, args.iters, variants, ceiling)
        out["cases"].extend(res)
        print(f"{fmt} {w}x{h}: " + ", ".join(f"{r['variant']}/{r['rows']} {r['kernel_ms'] * 1e3:.1f} us "
                                             f"({r['regs_spills']})" for r in res), flush=True)
    print(f"\n{'frame -> 224x224x3 f32':<28}{'variant':>11}{'kernel':>9}{'kern.L2':>9}{'GB/s':>7}{'x bound':>8}"
          f"{'h2d':>8}{'stage':>8}{'gpu e2e':>9}{'cpu(all)':>9}{'cpu(1)':>8}{'x cpu':>7}")
    for r in out["cases"]:
        name = ("separable" if r["variant"] == "separable" else f"gather/{r['rows']}") + ("*" if r["best"] else " ")
        print(f"{r['format'] + ' ' + r['frame']:<28}{name:>11}{r['kernel_ms']:>9.4f}{r['kernel_l2_ms']:>9.4f}"
              f"{r['gbps']:>7.0f}{r['x_bound']:>8.2f}{r['h2d_ms']:>8.3f}{r['stage_ms']:>8.3f}"
              f"{r['gpu_e2e_ms']:>9.3f}{r['cpu_ms_all_cores']:>9.3f}{r['cpu_ms_1_thread']:>8.2f}"
              f"{r['speedup_kernel']:>7.0f}")
    print("times in ms (medians); * fastest kernel of the case; x cpu = cpu(all cores) / kernel")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
