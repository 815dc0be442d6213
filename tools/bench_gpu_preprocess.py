"""Per-frame cost of GPU preprocessing vs the OpenCV path, on the same frames (needs pycuda and a CUDA device).

    python tools/bench_gpu_preprocess.py --json var/bench_gpu_preprocess.json

For each camera format -> 224x224x3 float32 (area downscale, ImageNet mean/std):
  kernel     fused kernel alone: 200 launches queued behind a large memset (so they run back to back at
             working clocks, not at Python's launch rate), CUDA events around them, per launch; median of 5.
             Input rotated over 16 device frames (80+ MB, more than L2): each launch reads from device memory.
  kernel_l2  same, one frame every launch: the production case, where the H2D just left the frame in L2.
  single     one launch between events, GPU otherwise idle (clocks may be low: latency as an idle GPU sees it).
  h2d        async H2D of the ROI rows from page-locked staging, CUDA events; median.
  stage      host copy of the camera frame into the page-locked staging slot (time.perf_counter); median.
  gpu_e2e    stage + H2D + kernel into a device buffer + sync, wall clock, through GpuPreprocessor; median.
  pinned     the same with the frames in page-locked source memory (pin_host_buffers): H2D straight from it.
  cpu        CpuPreprocessor (OpenCV, all cores and 1 thread) on the same frames; median.
Bandwidth: kernel bytes (ROI read once + output written once) / kernel time, against the device-to-device
copy rate measured here on a 1 GiB buffer (bytes read + written). `bound` = bytes / that rate. A launch this small
never reaches it (launch and drain, one wave); `floor` = the same bytes through a trivial kernel (16-byte loads of
the frame, one store per output element), timed like the others: what any kernel of this size costs here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
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


class Blocker:
    """Keeps the GPU busy (a large memset) while Python queues launches, so they then run back to back:
    Python's launch overhead (~5-10 us) would otherwise exceed the kernel and leave the GPU idle between."""

    def __init__(self, cuda, nbytes: int = 8 << 30) -> None:
        self.cuda, self.nbytes, self.buf = cuda, nbytes, cuda.mem_alloc(nbytes)

    def __call__(self, stream) -> None:
        self.cuda.memset_d8_async(self.buf, 0, self.nbytes, stream)


def batch_ms(cuda, fn, n: int, stream, blocker: Blocker) -> tuple[float, float]:
    """Per-launch GPU time of n launches queued behind the blocker, CUDA events around the n (median of 5),
    and the host time per launch (if the blocker ended before the queue was full, GPU time ~ host time)."""
    start, stop = cuda.Event(), cuda.Event()
    out, host = [], []
    for _ in range(5):
        blocker(stream)
        start.record(stream)
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        host.append((time.perf_counter() - t0) * 1e3 / n)
        stop.record(stream)
        stop.synchronize()
        out.append(stop.time_since(start) / n)
    return statistics.median(out), statistics.median(host)


FLOOR_SRC = r"""
extern "C" __global__ void read_floor(const uint4* __restrict__ src, int nvec, float* __restrict__ dst, int nout) {
    unsigned int acc = 0;  // every byte of the frame read once, every output element written once
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += gridDim.x * blockDim.x) {
        const uint4 q = __ldg(src + i);
        acc += q.x ^ q.y ^ q.z ^ q.w;
    }
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < nout; o += gridDim.x * blockDim.x) dst[o] = (float)acc;
}
"""


def floor_ms(cuda, frames: list, nbytes: int, dst, nout: int, iters: int, stream, blocker: Blocker) -> float:
    """The read+write floor: FLOOR_SRC over the same rotating frames; a block per 4 KiB, at least 4 per SM."""
    from pycuda.compiler import SourceModule

    fn = SourceModule(FLOOR_SRC, no_extern_c=True, options=["-O3"]).get_function("read_floor")
    sms = cuda.Context.get_device().get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
    grid = max(4 * sms, nbytes // (4 << 10))

    def launch(i: int) -> None:
        fn(frames[i % ROTATE], np.int32(nbytes // 16), dst, np.int32(nout), block=(256, 1, 1), grid=(grid, 1),
           stream=stream)

    batch_ms(cuda, launch, iters, stream, blocker)
    return batch_ms(cuda, launch, iters, stream, blocker)[0]


def sm_clock_mhz() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def copy_rate(cuda, nbytes: int, reps: int = 20) -> float:
    """Device-to-device copy, (read + write) bytes per second."""
    a, b = cuda.mem_alloc(nbytes), cuda.mem_alloc(nbytes)
    cuda.memset_d8(a, 1, nbytes)
    stream = cuda.Stream()
    ms = event_ms(cuda, lambda _: cuda.memcpy_dtod_async(b, a, nbytes, stream), reps, stream)
    return 2 * nbytes / (statistics.median(ms[2:]) * 1e-3)


def bench_case(cuda, fmt: str, w: int, h: int, iters: int, variants: list[tuple[str, int | None]],
               ceiling: float, blocker: Blocker) -> list[dict]:
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
            if variant == "vec16" and not gk.vec16_applies(plan, gk.resize_taps(plan)[0], w):
                continue
            if variant == "bayer" and gk.bayer_columns(plan, *gk.resize_taps(plan)) is None:
                continue
            k = Kernel(plan, rows=r, variant=variant)
            # correctness of this variant on frame 0 before timing it (poisoned output)
            cuda.memset_d8(dst, 0xFF, k.out_nbytes)
            k.launch(int(dev_frames[0]), w, int(dst), stream)
            got = np.empty(k.out_shape, np.float32)
            cuda.memcpy_dtoh_async(got, dst, stream)
            stream.synchronize()
            err = float((np.abs(got[0] - ref) / plan.gain.reshape(-1, 1, 1)).max())  # raw levels
            assert np.isfinite(got).all() and err <= gk.tolerance_levels(plan) + 1e-3, f"{variant}/{r}: {err} levels"
            def rotating(i: int, k: Kernel = k) -> None:
                k.launch(int(dev_frames[i % ROTATE]), w, int(dst), stream)

            def same(_: int, k: Kernel = k) -> None:
                k.launch(int(dev_frames[0]), w, int(dst), stream)

            batch_ms(cuda, rotating, iters, stream, blocker)  # warm-up: clocks up, module loaded
            clock = sm_clock_mhz()
            kernel_ms, queue_ms = batch_ms(cuda, rotating, iters, stream, blocker)
            results.append({"format": fmt, "frame": f"{w}x{h}", "variant": k.variant, "rows": k.rows,
                            "regs_spills": _regs(k), "kernel_ms": kernel_ms, "host_launch_ms": queue_ms,
                            "kernel_l2_ms": batch_ms(cuda, same, iters, stream, blocker)[0],
                            "kernel_single_ms": statistics.median(event_ms(cuda, rotating, iters, stream)),
                            "sm_clock_after_warmup": clock, "err_levels": err, "bytes": in_bytes + out_bytes})
        best = min(results, key=lambda x: x["kernel_ms"])
        floor = floor_ms(cuda, dev_frames, in_bytes, dst, 3 * 224 * 224, iters, stream, blocker)
        staging = cuda.pagelocked_empty(in_bytes, np.uint8)
        h2d = event_ms(cuda, lambda i: cuda.memcpy_htod_async(dev_frames[i % ROTATE], staging, stream), iters,
                       stream)
        stage = []
        for i in range(iters):
            t0 = time.perf_counter()
            np.copyto(staging.reshape(h, w), host[i % ROTATE])
            stage.append((time.perf_counter() - t0) * 1e3)
    def whole_path() -> list[float]:
        """Wall-clock ms per frame: stage (+ H2D) + kernel into a device buffer + sync."""
        out = []
        for i in range(iters + 5):
            t0 = time.perf_counter()
            staged = pre(frames[i % ROTATE])
            with pre.current():
                staged.enqueue_into(int(dst), stream)
                stream.synchronize()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    e2e = whole_path()
    # frames in page-locked source memory (as synthetic/replay sources deliver them for `preprocess: gpu`):
    # the H2D reads the frame in place, no staging copy
    pre.pin_host_buffers(host)
    pinned = whole_path()
    assert pre.staging_copies == iters + 5, "pinned frames must skip the staging copy"
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
                   gpu_e2e_ms=statistics.median(e2e[5:]), pinned_e2e_ms=statistics.median(pinned[5:]),
                   cpu_ms_all_cores=cpu_ms[cv2.getNumberOfCPUs()],
                   cpu_ms_1_thread=cpu_ms[1], cpu_threads=cv2.getNumberOfCPUs(), best=res is best)
        res["gbps"] = res["bytes"] / (res["kernel_ms"] * 1e-3) / 1e9
        res["bound_ms"] = res["bytes"] / ceiling * 1e3
        res["x_bound"] = res["kernel_ms"] / res["bound_ms"]
        res["floor_ms"] = floor
        res["x_floor"] = res["kernel_ms"] / floor
        res["speedup_kernel"] = res["cpu_ms_all_cores"] / res["kernel_ms"]
        res["pinned_x_h2d"] = res["pinned_e2e_ms"] / res["h2d_ms"]  # target <= 1.5
        res["speedup_h2d_kernel"] = res["cpu_ms_all_cores"] / (res["kernel_ms"] + res["h2d_ms"])
    return results


def _regs(k: Kernel) -> str:
    return f"{k.fn.num_regs} regs, {k.fn.local_size_bytes} B local"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--variants", default="vec16,bayer,separable,gather:1,gather:4",
                    help="kernels to time: vec16 (Mono8 only), bayer (Bayer only), separable, gather:ROWS (threads "
                         "per output pixel)")
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args(argv)
    dev = require_cuda(0)
    import pycuda.driver as cuda

    ctx = dev.retain_primary_context()
    ctx.push()
    try:
        ceiling = copy_rate(cuda, 1 << 30)
        blocker = Blocker(cuda)
    finally:
        cuda.Context.pop()
    variants = [(v.split(":")[0], int(v.split(":")[1]) if ":" in v else None) for v in args.variants.split(",")]
    out = {"device": dev.name(), "copy_rate_gbps": ceiling / 1e9, "cases": []}
    print(f"{dev.name()}: device-to-device copy {ceiling / 1e9:.0f} GB/s (read+write, 1 GiB)", flush=True)
    for fmt, w, h in CASES:
        res = bench_case(cuda, fmt, w, h, args.iters, variants, ceiling, blocker)
        out["cases"].extend(res)
        for r in res:
            print(f"{fmt} {w}x{h} {r['variant']}/{r['rows']}: {r['kernel_ms'] * 1e3:.2f} us back to back, "
                  f"{r['kernel_single_ms'] * 1e3:.1f} us single, host launch {r['host_launch_ms'] * 1e3:.1f} us; "
                  f"{r['regs_spills']}; SM clock after warm-up {r['sm_clock_after_warmup']}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    cols = [("variant", 11, "s"), ("kernel", 9, ".4f"), ("kern.L2", 9, ".4f"), ("single", 8, ".4f"),
            ("GB/s", 7, ".0f"), ("x bound", 8, ".2f"), ("floor", 8, ".4f"), ("x floor", 8, ".2f"),
            ("h2d", 8, ".3f"), ("stage", 8, ".3f"), ("gpu e2e", 9, ".3f"),
            ("pinned", 8, ".3f"), ("x h2d", 7, ".2f"),
            ("cpu(all)", 9, ".3f"), ("cpu(1)", 8, ".2f"), ("x cpu", 7, ".0f")]
    keys = ["name", "kernel_ms", "kernel_l2_ms", "kernel_single_ms", "gbps", "x_bound", "floor_ms", "x_floor",
            "h2d_ms", "stage_ms",
            "gpu_e2e_ms", "pinned_e2e_ms", "pinned_x_h2d", "cpu_ms_all_cores", "cpu_ms_1_thread", "speedup_kernel"]
    print(f"\n{'frame -> 224x224x3 f32':<24}" + "".join(f"{c:>{wd}}" for c, wd, _ in cols))
    for r in out["cases"]:
        r["name"] = (f"gather/{r['rows']}" if r["variant"] == "gather" else r["variant"]) + ("*" if r["best"] else "")
        cells = "".join(f"{r[k]:>{wd}{f}}" for k, (_, wd, f) in zip(keys, cols, strict=True))
        print(f"{r['format'] + ' ' + r['frame']:<24}" + cells)
    print("times in ms (medians); * fastest kernel of the case; floor = the same bytes through a trivial kernel; "
          "x cpu = cpu(all cores) / kernel; pinned = gpu e2e "
          "with the frame in page-locked source memory (no staging copy); x h2d = pinned / h2d")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
