"""`inspectd fit-anomaly`: good parts in, a model under the engines folder and a ready recipe out.

    inspectd fit-anomaly --config STATION.yaml --product NAME --images GOOD_DIR [--val DIR]

Runs in the training venv (torch, the `train` extra). Steps: the recipe's own CpuPreprocessor turns every
image into the tensor the daemon will feed; the backbone's patch features of the bank images are
subsampled by greedy coreset into the memory bank; the graph is exported to ONNX and checked against torch;
the held-out good parts are scored by the exported file through the daemon's own chain (ONNX Runtime,
postprocess) and set the threshold (inspectd/anomaly/calibrate.py); the recipe is written and loaded back
as check-config would.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from inspectd.anomaly import calibrate as cal
from inspectd.config.anomaly import Calibration
from inspectd.config.load import load_product, load_station
from inspectd.config.schema import ProductConfig
from inspectd.errors import ConfigError

SIZE = 320  # model input; 224 misses small spots that 320 catches (shared/reference/models/anomaly-baseline.md)
MAX_BANK = 1000  # entries: the 50 ms budget on these 2 busy cores (README "Anomaly detection": cost per bank size)
RATIO = 0.01  # of all patches, before the cap
HOLDOUT = 0.3  # of GOOD_DIR when there is no --val
LITE_MEAN, LITE_STD = 127.0, 128.0  # EfficientNet-Lite's preprocessing on 0..255


@dataclass
class FitOptions:
    size: int = SIZE
    max_bank: int = MAX_BANK
    ratio: float = RATIO
    holdout: float = HOLDOUT
    quantile: float = cal.QUANTILE
    margin: float = cal.MARGIN
    seed: int = 0
    batch: int = 16
    plc_id: int | None = None
    engines: Path | None = None  # default: <station folder>/engines
    calibrate_only: bool = False  # keep the model, only recompute the threshold


@dataclass
class FitReport:
    recipe: Path
    model: Path
    calibration: Calibration
    images: int
    val: int
    patches: int
    seconds: dict[str, float] = field(default_factory=dict)
    parity: float = 0.0  # largest |score ONNX - score torch| on the checked images
    model_bytes: int = 0


class Bar:
    """One-line progress bar on a terminal (stderr); one line per step elsewhere."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label, self.stream, self.t0 = label, stream, time.perf_counter()
        self.tty = stream.isatty()
        self.last = -1.0

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        if not self.tty and frac < 1.0 and frac - self.last < 0.1:
            return
        self.last = frac
        bar = "#" * int(frac * 30)
        end = "\n" if done >= total or not self.tty else ""
        self.stream.write(f"\r{self.label:<12} [{bar:<30}] {done}/{total} {time.perf_counter() - self.t0:6.1f} s{end}")
        self.stream.flush()


def good_images(folder: Path) -> list[Path]:
    from inspectd.camera.replay import labelled_images

    if not folder.is_dir():
        raise ConfigError([f"{folder}: image folder not found"])
    items = labelled_images(folder)
    paths = [p for p, label in items if label != "reject"]  # labels.csv may mark a few; they stay out
    if not paths:
        raise ConfigError([f"{folder}: no good images (png, jpg, bmp, tif)"])
    return paths


def recipe_doc(name: str, plc_id: int, model: Path, recipe_dir: Path, frame_w: int, frame_h: int,
               size: int) -> dict:
    """The recipe the fit writes: full frame as ROI, area resize to the model's square input, Lite's
    normalisation, mono cameras replicated to RGB; the rule's min_score is filled in by the calibration."""
    import os

    return {
        "name": name, "kind": "anomaly", "plc_id": plc_id,
        "model": {"path": os.path.relpath(model, recipe_dir),
                  "input": {"name": "input", "width": size, "height": size, "channels": 3, "dtype": "float32"},
                  "scores_output": "score", "activation": "none", "heatmap_output": "anomaly_map"},
        "preprocess": {"roi": {"x": 0, "y": 0, "width": frame_w, "height": frame_h}, "resize": "area",
                       "color": "rgb", "scale": 1.0, "mean": [LITE_MEAN] * 3, "std": [LITE_STD] * 3},
        "classes": ["anomaly"],
        "rules": [{"name": "anomaly", "class": "anomaly", "min_score": 1.0, "result_code": 1}],
        "failsafe": "reject",
        "anomaly": {"format": "inspectd", "sensitivity": 1.0},
    }


def product_from(doc: dict, base: Path) -> ProductConfig:
    from inspectd.config.load import resolve_paths

    return resolve_paths(ProductConfig.model_validate(doc), base)


def tensors(product: ProductConfig, paths: Sequence[Path], batch: int) -> Iterator[np.ndarray]:
    """Batches of the tensors the daemon would feed (the recipe's own CpuPreprocessor)."""
    from inspectd.engines.images import load_frame
    from inspectd.preprocess.cpu import CpuPreprocessor

    pre = CpuPreprocessor(product.preprocess, product.model.input, ring=2)
    for i in range(0, len(paths), batch):
        yield np.concatenate([np.array(pre(load_frame(p)), copy=True) for p in paths[i:i + batch]])


def write_recipe(path: Path, doc: dict, c: Calibration, report_lines: Sequence[str]) -> None:
    import yaml

    doc = {**doc, "rules": [{**doc["rules"][0], "min_score": c.threshold}]}
    doc["anomaly"] = {**doc["anomaly"], "calibration": c.model_dump(exclude_none=True)}
    head = [f"# Anomaly recipe written by `inspectd fit-anomaly` ({time.strftime('%Y-%m-%d %H:%M')}).",
            *(f"# {line}" for line in report_lines),
            "# rules[0].min_score is the threshold in score units (largest patch distance to the good parts' bank).",
            "# anomaly.sensitivity moves it without refitting: parts reject at p50 + (min_score - p50) / sensitivity,",
            "# p50 = calibration.good.p50 (a typical good part); above 1 rejects more, below 1 fewer.",
            "# anomaly.calibration.false_rejects: sensitivity -> share of the held-out good parts rejected at it.",
            ""]
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head) + body)


def score_with_daemon_chain(product: ProductConfig, model: Path, paths: Sequence[Path],
                            bar: Bar | None = None) -> np.ndarray:
    """Scores of `paths` as the daemon computes them: CpuPreprocessor -> ONNX Runtime -> postprocess."""
    from inspectd.engines.compare import runtime_for_model
    from inspectd.engines.images import load_frame

    rt = runtime_for_model(product, model)
    try:
        out = []
        for i, p in enumerate(paths):
            findings = rt.postprocess(rt.backend.infer(rt.preprocess(load_frame(p))))
            out.append(findings.scores["anomaly"])
            if bar:
                bar(i + 1, len(paths))
        return np.asarray(out, np.float64)
    finally:
        rt.close()


def fit_anomaly(station_path: Path, name: str, images: Path, val: Path | None, opts: FitOptions,
                log: TextIO = sys.stdout) -> FitReport:
    """Fit, export and calibrate; with `opts.calibrate_only` only score the good parts with the model already
    at <engines>/NAME.onnx and rewrite the recipe's threshold (no torch needed)."""
    from inspectd.engines.images import load_frame

    station_path = station_path.resolve()
    station = load_station(station_path)
    products_dir = Path(station.products_dir)
    engines = (opts.engines or station_path.parent / "engines").resolve()
    recipe_path, model_path = products_dir / f"{name}.yaml", engines / f"{name}.onnx"
    seconds: dict[str, float] = {}

    paths = good_images(images)
    if opts.calibrate_only:
        bank_paths, val_paths = [], good_images(val) if val is not None else paths
    elif val is not None:
        bank_paths, val_paths = paths, good_images(val)
    else:
        order = np.random.default_rng(opts.seed).permutation(len(paths))
        n_val = round(opts.holdout * len(paths))
        val_paths = [paths[i] for i in sorted(order[:n_val])]
        bank_paths = [paths[i] for i in sorted(order[n_val:])]
    if not val_paths or not (bank_paths or opts.calibrate_only):
        raise ConfigError([f"{images}: {len(paths)} good image(s) are too few to build a bank and calibrate"])

    first = load_frame((bank_paths or val_paths)[0])
    h, w = first.image.shape[:2]
    plc_id = opts.plc_id if opts.plc_id is not None else _free_plc_id(products_dir, name)
    size = _model_size(model_path) if opts.calibrate_only else opts.size
    doc = recipe_doc(name, plc_id, model_path, products_dir, w, h, size)
    product = product_from(doc, products_dir)

    if opts.calibrate_only:
        if not model_path.is_file():
            raise ConfigError([f"{model_path}: no model to calibrate (fit it first)"])
        k, n_images, patches, parity = _bank_entries(model_path), _bank_images(recipe_path), 0, float("nan")
        print(f"fit-anomaly {name}: calibrating {model_path.name} on {len(val_paths)} good images", file=log)
    else:
        print(f"fit-anomaly {name}: {len(bank_paths)} good images for the memory bank, {len(val_paths)} held out "
              f"for the threshold; input {size}x{size} from {w}x{h} {first.pixel_format}", file=log)
        k, patches, parity = _fit_and_export(product, bank_paths, val_paths, model_path, opts, seconds)
        n_images = len(bank_paths)

    t0 = time.perf_counter()
    good = score_with_daemon_chain(product, model_path, val_paths, Bar("calibrate"))
    seconds["calibrate"] = time.perf_counter() - t0
    c = cal.calibrate(good, quantile=opts.quantile, margin=opts.margin, bank=k, images=n_images)
    lines = [f"memory bank: {k} patch features from {n_images} good images; input {size}x{size}",
             f"threshold {c.threshold:.4f} = (1 + {c.margin}) x the {c.quantile} quantile of {len(val_paths)} "
             f"held-out good scores (median {c.good.p50:.4f}, max {c.good.max:.4f})",
             f"held-out good parts rejected at sensitivity 1.0: {100 * c.false_rejects[1.0]:.2f} %"]
    if len(val_paths) < cal.FEW_PARTS:
        lines.append(f"WARNING: only {len(val_paths)} held-out good parts; below {cal.FEW_PARTS} the quantile is "
                     "close to their maximum and fresh good parts exceed it more often: calibrate on more")
    write_recipe(recipe_path, doc, c, lines)
    load_product(recipe_path)  # as check-config and the daemon will read it
    report = FitReport(recipe_path, model_path, c, n_images, len(val_paths), patches, seconds, parity,
                       model_path.stat().st_size)
    for line in lines:
        print(line, file=log)
    print("sensitivity -> held-out good parts rejected: "
          + ", ".join(f"{s}: {100 * f:.2f} %" for s, f in c.false_rejects.items()), file=log)
    checked = "model kept" if opts.calibrate_only else f"ONNX vs torch max |d score| {parity:.1e}"
    print(f"wrote {model_path} ({report.model_bytes / 2**20:.2f} MiB; {checked}) and {recipe_path}; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()), file=log)
    return report


def _fit_and_export(product: ProductConfig, bank_paths: Sequence[Path], val_paths: Sequence[Path],
                    model_path: Path, opts: FitOptions, seconds: dict[str, float]) -> tuple[int, int, float]:
    """Memory bank from `bank_paths`, exported to `model_path`; (bank entries, patches seen, ONNX-torch diff)."""
    try:
        import torch
    except ImportError:
        raise ConfigError(["fit-anomaly needs torch: run it from the training venv (pip install -e '.[train]'; "
                           "README 'Anomaly detection')"]) from None
    from inspectd.anomaly import patchcore

    torch.manual_seed(opts.seed)
    t0 = time.perf_counter()
    features = patchcore.feature_extractor(opts.size)
    bar = Bar("features")
    chunks = []
    for i, batch in enumerate(tensors(product, bank_paths, opts.batch)):
        chunks.append(patchcore.extract(features, batch, batch=opts.batch))
        bar(min((i + 1) * opts.batch, len(bank_paths)), len(bank_paths))
    x = torch.cat(chunks)
    del chunks
    seconds["features"] = time.perf_counter() - t0
    k = min(opts.max_bank, max(1, math.ceil(opts.ratio * x.shape[0])))
    t0 = time.perf_counter()
    idx = patchcore.greedy_coreset(x, k, seed=opts.seed, progress=Bar("coreset"))
    bank = x[idx].clone()
    seconds["coreset"] = time.perf_counter() - t0
    patches = int(x.shape[0])
    del x
    model = patchcore.PatchCore(features, bank, (opts.size, opts.size)).eval()
    seconds["export"] = patchcore.export_onnx(model, model_path)
    return k, patches, _parity(model, model_path, product, val_paths[:4])


def _model_size(path: Path) -> int:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[3].dim_value)


def _bank_entries(path: Path) -> int:
    """Memory bank size of an exported graph: the |b|^2 row (PatchCore's `b2` buffer)."""
    import onnx

    for init in onnx.load(str(path), load_external_data=False).graph.initializer:
        if init.name == "b2" and len(init.dims) == 1:
            return int(init.dims[0])
    return 0


def _bank_images(recipe: Path) -> int:
    """Good images the bank was built from, as the recipe recorded it at the fit (0 if unknown)."""
    import yaml

    try:
        return int(yaml.safe_load(recipe.read_text())["anomaly"]["calibration"]["images"])
    except Exception:  # no recipe yet, or written by hand
        return 0


def _free_plc_id(products_dir: Path, name: str) -> int:
    """RECIPE_NO for a new product: its old number when refitting, else one above the highest in use."""
    import yaml

    used: dict[str, int] = {}
    for p in products_dir.glob("*.yaml"):
        try:
            doc = yaml.safe_load(p.read_text())
            used[p.stem] = int(doc["plc_id"])
        except Exception:  # a broken recipe is check-config's business, not ours
            continue
    return used.get(name, max(used.values(), default=0) + 1)


def _parity(model, path: Path, product: ProductConfig, paths: Sequence[Path]) -> float:
    """Largest |score| difference between torch and ONNX Runtime on the same tensors; raises past 1e-3."""
    import onnxruntime as ort
    import torch

    x = next(tensors(product, paths, len(paths)))
    with torch.no_grad():
        ref_score, ref_map = (t.numpy() for t in model(torch.from_numpy(x)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    score, amap = sess.run(["score", "anomaly_map"], {"input": x})
    diff = float(max(np.abs(score - ref_score).max(), np.abs(amap - ref_map).max()))
    if diff > 1e-3 * max(1.0, float(np.abs(ref_score).max())):
        raise RuntimeError(f"ONNX Runtime and torch disagree on {path}: max |d| {diff}")
    return diff


def cmd_fit_anomaly(args) -> int:
    opts = FitOptions(size=args.size, max_bank=args.max_bank, ratio=args.ratio, holdout=args.holdout,
                      quantile=args.quantile, margin=args.margin, seed=args.seed, plc_id=args.plc_id,
                      engines=args.engines, calibrate_only=args.calibrate_only)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fit_anomaly(args.config, args.product, args.images, args.val, opts)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("fit-anomaly", help="teach an anomaly model on good parts only; writes model + recipe "
                                           "(needs the train extra)")
    p.add_argument("--config", required=True, type=Path, help="station YAML (its products_dir gets the recipe)")
    p.add_argument("--product", required=True, help="product name: <products_dir>/NAME.yaml, <engines>/NAME.onnx")
    p.add_argument("--images", required=True, type=Path, help="folder of good parts (labels.csv rejects left out)")
    p.add_argument("--val", type=Path, default=None,
                   help=f"held-out good parts for the threshold (default: a share of --images, --holdout {HOLDOUT})")
    p.add_argument("--engines", type=Path, default=None, help="model folder (default: engines/ beside the station)")
    p.add_argument("--size", type=int, default=SIZE, help="model input side, pixels (multiple of 16)")
    p.add_argument("--max-bank", type=int, default=MAX_BANK, help="memory bank entries at most (latency grows "
                                                                   "~5 ms per 1,000 on one CPU core)")
    p.add_argument("--ratio", type=float, default=RATIO, help="coreset share of all patches, before --max-bank")
    p.add_argument("--holdout", type=float, default=HOLDOUT, help="share of --images held out without --val")
    p.add_argument("--quantile", type=float, default=cal.QUANTILE, help="of held-out good scores")
    p.add_argument("--margin", type=float, default=cal.MARGIN, help="threshold = (1 + margin) x quantile")
    p.add_argument("--plc-id", type=int, default=None, help="RECIPE_NO (default: kept on refit, else next free)")
    p.add_argument("--calibrate-only", action="store_true",
                   help="keep <engines>/NAME.onnx, score --val (else --images) and rewrite the threshold; no torch")
    p.add_argument("--seed", type=int, default=0, help="same seed, same hold-out split and coreset")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=cmd_fit_anomaly)
