"""Evaluate a defect model through the daemon's own chain on held-out synthetic parts.

    .venv/bin/python tools/eval_demo_model.py                       # engines/demo_disc.onnx, 2000 fresh parts
    .venv/bin/python tools/eval_demo_model.py --folder var/datasets/heldout   # a make_dataset.py folder

Each part goes CpuPreprocessor -> OnnxRuntimeBackend -> Postprocessor -> decide with the
disc-a recipe, exactly as in the daemon. Prints accuracy, per-kind recall, good-part
specificity, the confusion matrix and single-image latency, and draws a montage of example
parts with their scores and heatmaps (misjudged parts framed in red) to tools/reports/demo_model.png.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from demo_parts import CHUNK, KINDS, PRODUCT, ROOT, raw_parts

from inspectd.camera.replay import labelled_images, read_image
from inspectd.config.load import load_product
from inspectd.decide import decide
from inspectd.infer.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from inspectd.postprocess import Postprocessor
from inspectd.preprocess.cpu import CpuPreprocessor
from inspectd.types import Frame, Outcome

MONTAGE_PER_KIND = 6  # correct examples shown per kind, besides every misjudged part (up to a cap)
MONTAGE_ERRORS = 16


def _chunk(args: tuple[int, int, int]) -> list[tuple[np.ndarray, str]]:
    seed, chunk, n = args
    return [(image, kind or "good") for image, _, kind in raw_parts(seed, chunk, n, "natural")]


def generated(seed: int, count: int, workers: int) -> Iterator[list[tuple[np.ndarray, str]]]:
    jobs = [(seed, i, min(CHUNK, count - i * CHUNK)) for i in range((count + CHUNK - 1) // CHUNK)]
    with mp.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_chunk, jobs)


def from_folder(folder: Path) -> Iterator[list[tuple[np.ndarray, str]]]:
    kinds: dict[str, str] = {}
    with (folder / "labels.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            kinds[row["file"]] = row.get("kind") or ("good" if row["label"] == "pass" else "defect")
    batch = []
    for path, label in labelled_images(folder):
        if label is None:
            continue
        batch.append((read_image(path, "Mono8"), kinds.get(path.name, "good" if label == "pass" else "defect")))
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def montage(examples: list[tuple[np.ndarray, str, float, bool, np.ndarray]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cols = 8
    rows = (len(examples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.25), squeeze=False)
    heat_cmap = ListedColormap([[1, 0.15, 0.1, a] for a in np.linspace(0, 0.55, 64)])  # red, alpha by score
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, kind, p_defect, correct, heat) in zip(axes.flat, examples, strict=False):
        h, w = image.shape
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.imshow(heat, cmap=heat_cmap, vmin=0, vmax=1, extent=(0, w, h, 0), interpolation="nearest")
        verdict = "reject" if p_defect >= 0.5 else "pass"
        ax.set_title(f"{kind}: {verdict}\np_defect {p_defect:.2f}", fontsize=8,
                     color="black" if correct else "red", fontweight="normal" if correct else "bold")
        if not correct:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("red")
                spine.set_linewidth(3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--product", type=Path, default=PRODUCT)
    ap.add_argument("--model", type=Path, help="ONNX file (default: the recipe's model.path)")
    ap.add_argument("--count", type=int, default=2000, help="fresh parts to generate (half defective)")
    ap.add_argument("--seed", type=int, default=4242, help="generator seed; training used 1001/1002")
    ap.add_argument("--folder", type=Path, help="evaluate a make_dataset.py folder instead of fresh parts")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--montage", type=Path, default=ROOT / "tools/reports/demo_model.png", help="'' to skip")
    ap.add_argument("--latency-runs", type=int, default=500, help="single-image inferences timed (1 thread)")
    args = ap.parse_args()

    product = load_product(args.product)
    if args.model:
        product = product.model_copy(update={"model": product.model.model_copy(update={"path": args.model.resolve()})})
    backend = OnnxRuntimeBackend(OnnxRuntimeConfig(type="onnxruntime", intra_op_threads=1), product)
    backend.load()
    prep, post = CpuPreprocessor(product.preprocess, product.model.input), Postprocessor(product)

    source = from_folder(args.folder) if args.folder else generated(args.seed, args.count, args.workers)
    what = str(args.folder) if args.folder else f"{args.count} fresh parts, seed {args.seed}"
    kinds: list[str] = []
    rejected: list[bool] = []
    shown: dict[str, int] = {}
    examples, errors = [], []
    t0 = time.perf_counter()
    for batch in source:
        for image, kind in batch:
            frame = Frame(image=image, pixel_format="Mono8", t_grab=time.monotonic())
            findings = post(backend.infer(prep(frame)))
            decision = decide(findings, product)
            reject = decision.outcome is Outcome.REJECT
            correct = reject == (kind != "good")
            kinds.append(kind)
            rejected.append(reject)
            item = (image, kind, findings.scores["defect"], correct, findings.extra["heatmap"])
            if not correct and len(errors) < MONTAGE_ERRORS:
                errors.append(item)
            elif correct and shown.get(kind, 0) < MONTAGE_PER_KIND:
                shown[kind] = shown.get(kind, 0) + 1
                examples.append(item)
        if len(kinds) % 512 == 0:
            print(f"{len(kinds)} parts, {time.perf_counter() - t0:.0f}s", flush=True)
    print(f"{len(kinds)} parts evaluated in {time.perf_counter() - t0:.1f}s")

    kind_arr, rej = np.asarray(kinds), np.asarray(rejected)
    truth = kind_arr != "good"
    acc = float(np.mean(rej == truth))
    print(f"model {product.model.path.name} on {what}")
    print(f"accuracy {acc:.4f} ({int(np.sum(rej == truth))}/{len(rej)})")
    for kind in [k for k in KINDS if k in kinds] + sorted(set(kinds) - set(KINDS)):
        sel = kind_arr == kind
        rate = np.mean(~rej[sel]) if kind == "good" else np.mean(rej[sel])
        print(f"  {'good specificity' if kind == 'good' else kind + ' recall':17s} {rate:.4f}  (n={int(sel.sum())})")
    print("confusion matrix (rows: truth, columns: verdict)")
    print(f"  {'':8s}{'pass':>8s}{'reject':>8s}")
    for name, t in (("pass", False), ("reject", True)):
        print(f"  {name:8s}{int(np.sum(~rej[truth == t])):8d}{int(np.sum(rej[truth == t])):8d}")

    frame = Frame(image=examples[0][0], pixel_format="Mono8", t_grab=0.0)
    tensor = prep(frame).copy()
    for _ in range(20):
        backend.infer(tensor)
    infer_ms, prep_ms = [], []
    for _ in range(args.latency_runs):
        t = time.perf_counter()
        backend.infer(tensor)
        infer_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        prep(frame)
        prep_ms.append((time.perf_counter() - t) * 1e3)
    print(f"ONNX Runtime CPU, 1 thread, batch 1, {args.latency_runs} runs: median {np.median(infer_ms):.3f} ms, "
          f"p99 {np.percentile(infer_ms, 99):.3f} ms; CpuPreprocessor median {np.median(prep_ms):.3f} ms")

    if str(args.montage):
        order = {k: i for i, k in enumerate(KINDS)}
        examples.sort(key=lambda e: order.get(e[1], len(KINDS)))
        title = (f"{product.model.path.name} on {what}: accuracy {acc:.2%}; red heat = defect cells; "
                 f"misjudged parts framed red ({len(errors)} shown of {int(np.sum(rej != truth))})")
        montage(errors + examples, title, args.montage)
        print(f"montage -> {args.montage}")


if __name__ == "__main__":
    main()
