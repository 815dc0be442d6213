"""Acquisition overhead per frame of the GenICam source, against a free-running simulated camera.

    .venv/bin/python tools/camera_bench.py --producer .cache/genicam/producers/TLSimu.cti \
        --serial SN_InterfaceA_0 --width 2448 --height 2048 --seconds 5

TLSimu in free-run delivers as fast as it can draw (5 MP Mono8 by default here). Reported:
- `raw_fps` / `fps`: frames per second through harvesters alone (try_fetch + queue) and through
  GenICamSource.grab (copy, accounting); the simulator draws on the same CPU, so a copy costs rate,
- `grab_ms`: median wall time of grab at that rate (waiting for the frame included),
- `fetch_ready_ms`: harvesters' try_fetch of a buffer already waiting (its per-frame Python work),
- `copy_requeue_ms`: the one copy out of the GenTL buffer (into a frame-pool slot; `--frame-pool 0`: into fresh
  memory, the path before the pool) plus handing the buffer back,
- `overhead_per_frame_ms`: the two together: acquisition cost per frame once the frame is in host memory.
Prints one JSON object. Needs the [genicam] extra; tests/genicam/provision.py fetches TLSimu.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.camera.genicam import GenICamConfig, GenICamSource
from inspectd.camera.genicam_bench import acquisition_overhead


def bench_source(cfg: GenICamConfig, seconds: float) -> dict[str, float]:
    src = GenICamSource(cfg)
    src.open()
    try:
        return acquisition_overhead(src, seconds)
    finally:
        src.close()


def bench_raw(cfg: GenICamConfig, seconds: float) -> dict[str, float]:
    from inspectd.camera import genicam_device as dev

    h = dev.new_harvester(dev.producer_files(cfg.producers, cfg.use_env_path))
    ia, _ = dev.open_acquirer(h, cfg.serial, cfg.user_id, cfg.num_buffers)
    try:
        nm = ia.remote_device.node_map
        for k, v in cfg.features.items():
            getattr(nm, k).value = v
        if hasattr(nm, "TriggerMode"):
            nm.TriggerMode.value = "Off"
        ia.start()
        times: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            buf = ia.try_fetch(timeout=2.0)
            if buf is not None:
                buf.queue()
                times.append(time.perf_counter() - t0)
        return {"raw_frames": len(times), "raw_fps": len(times) / seconds,
                "raw_fetch_ms": 1e3 * statistics.median(times)}
    finally:
        dev.teardown(ia, h)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--producer", type=Path, required=True)
    ap.add_argument("--serial", required=True)
    ap.add_argument("--width", type=int, default=2448)
    ap.add_argument("--height", type=int, default=2048)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--buffers", type=int, default=8)
    ap.add_argument("--frame-pool", type=int, default=None,
                    help="camera.frame_pool: slots the copy out of the GenTL buffer goes into (0: fresh copies)")
    args = ap.parse_args()
    cfg = GenICamConfig(type="genicam", producers=[args.producer], use_env_path=False, serial=args.serial,
                        trigger="free_run", num_buffers=args.buffers, frame_pool=args.frame_pool,
                        features={"Width": args.width, "Height": args.height})
    raw = bench_raw(cfg, args.seconds)
    ours = bench_source(cfg, args.seconds)
    out = {"producer": args.producer.name, "width": args.width, "height": args.height, "frame_pool": cfg.pool_slots,
           "megapixels": args.width * args.height / 1e6, "machine": platform.machine(), **raw, **ours}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
