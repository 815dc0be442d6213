"""Write a labelled folder of synthetic parts for the replay camera, evaluation or calibration.

    .venv/bin/python tools/make_dataset.py var/datasets/heldout --count 500 --seed 7

Each part is a Mono8 448x448 PNG as the synthetic camera would serve it; `labels.csv` holds
`file,label,kind` (label pass|reject, kind good|scratch|spot|chip), the format
`inspectd.camera.replay.labelled_images` reads. Same seed and count, same files.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import sys
import time
from pathlib import Path

import cv2
from demo_parts import CHUNK, raw_parts


def _write_chunk(args: tuple[Path, int, int, int, str]) -> list[tuple[str, str, str]]:
    folder, seed, chunk, n, mix = args
    rows = []
    for i, (image, _, kind) in enumerate(raw_parts(seed, chunk, n, mix)):
        name = f"part_{chunk * CHUNK + i:06d}.png"
        if not cv2.imwrite(str(folder / name), image):
            raise OSError(f"cannot write {folder / name}")
        rows.append((name, "reject" if kind else "pass", kind or "good"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7, help="use one the demo model was not trained on (it used 1001)")
    ap.add_argument("--mix", choices=("natural", "balanced", "good"), default="natural",
                    help="natural: half defective, in the synthetic camera's kind mix; "
                         "balanced: half defective, kinds evenly split; good: good parts only (anomaly fitting)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    args.folder.mkdir(parents=True, exist_ok=True)
    if any(args.folder.glob("*.png")):
        sys.exit(f"{args.folder} already holds images; pick an empty folder")
    jobs = [(args.folder, args.seed, i, min(CHUNK, args.count - i * CHUNK), args.mix)
            for i in range((args.count + CHUNK - 1) // CHUNK)]
    t0 = time.perf_counter()
    rows: list[tuple[str, str, str]] = []
    with mp.get_context("fork").Pool(args.workers) as pool:
        for chunk_rows in pool.imap(_write_chunk, jobs):
            rows.extend(chunk_rows)
            print(f"\r{len(rows)}/{args.count} parts", end="", flush=True)
    with (args.folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("file", "label", "kind"))
        w.writerows(rows)
    counts = {k: sum(r[2] == k for r in rows) for k in ("good", "scratch", "spot", "chip")}
    print(f"\nwrote {len(rows)} parts to {args.folder} in {time.perf_counter() - t0:.1f}s: {counts}")


if __name__ == "__main__":
    main()
