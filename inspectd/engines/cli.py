"""Engine commands: build-engine, quantize, compare, eval. Registered by inspectd.cli via add_engine_parsers."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from inspectd.errors import BackendUnavailable, ExitCode


def _product(path: Path):
    from inspectd.config.load import load_product

    return load_product(path.resolve())


# -- build-engine -------------------------------------------------------------------------------------------
def cmd_build_engine(args: argparse.Namespace) -> int:
    from inspectd.engines.build import BuildOptions, BuildProgress, build_engine, has_qdq
    from inspectd.engines.profiles import profiles_for
    from inspectd.infer.tensorrt import load_trt

    products = [_product(p) for p in args.product]
    onnx = args.onnx.resolve()
    out = args.out or onnx.with_name(f"{onnx.stem}.{args.precision}.engine")
    profiles = profiles_for(products, onnx, args.max_batch)
    trt = load_trt(args.runtime)
    with ExitStack() as stack:
        gpu_name, cc, device = "", args.compute_capability, None
        if args.runtime == "tensorrt" or cc is None:  # TensorRT 10 builds for the GPU it runs on
            from inspectd.infer.cuda_buffers import CudaDevice

            device = CudaDevice(args.device)
            stack.callback(device.close)
            stack.enter_context(device)
            gpu_name, cc = device.name, device.compute_capability
        calibrator = None
        if args.precision == "int8" and not has_qdq(onnx) and args.calib is not None:
            from inspectd.engines.calibrate import CalibrationSet, CalibratorFeed, make_entropy_calibrator
            from inspectd.infer.cuda_buffers import DeviceUploader, TensorSlot

            if device is None:
                raise BackendUnavailable("implicit INT8 calibration runs on the GPU: use TensorRT 10 on one")
            data = CalibrationSet.from_folder(products[0], args.calib, limit=args.calib_images, batch=args.max_batch)
            spec = products[0].model.input
            shape = (args.max_batch, spec.channels, spec.height, spec.width)
            uploader = DeviceUploader(device.cuda, TensorSlot(spec.name, True, np.dtype("float32"), shape))
            stack.callback(uploader.buffer.free)
            cache = args.calib_cache or out.with_name(out.name + ".calib")
            calibrator = make_entropy_calibrator(trt, CalibratorFeed(data, uploader, cache))
        opts = BuildOptions(precision=args.precision, workspace_mb=args.workspace_mb, timing_cache=args.timing_cache,
                            compute_capability=cc, gpu_name=gpu_name, calibrator=calibrator)
        manifest = build_engine(trt, onnx, out, profiles, opts, BuildProgress())
    print(f"wrote {out} ({manifest.engine_bytes / 1e6:.1f} MB, {manifest.precision}, {manifest.runtime} "
          f"{manifest.trt_version}, sm {manifest.compute_capability}, {len(profiles)} profile(s), "
          f"{manifest.build_seconds:.1f} s) and {out.name}.json")
    return 0


def add_build_engine_parser(sub) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine + manifest from an ONNX model")
    p.add_argument("--onnx", required=True, type=Path, help="ONNX model (FP32, or Q/DQ from `inspectd quantize`)")
    p.add_argument("--product", required=True, type=Path, action="append",
                   help="product recipe; repeat for one engine serving several sizes (one profile each)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16",
                   help="engine precision (int8: a Q/DQ model, or --calib images on TensorRT 10)")
    p.add_argument("--out", type=Path, default=None, help="engine file (default <onnx>.<precision>.engine)")
    p.add_argument("--runtime", choices=["tensorrt", "tensorrt-rtx"], default="tensorrt",
                   help="TensorRT 10 builds for this GPU; TensorRT-RTX for --compute-capability")
    p.add_argument("--compute-capability", default=None,
                   help="TensorRT-RTX target such as 8.6 (no GPU needed); default: this GPU's")
    p.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace memory-pool limit")
    p.add_argument("--timing-cache", type=Path, default=None, help="timing cache file, read and updated")
    p.add_argument("--max-batch", type=int, default=1, help="largest batch the engine's profiles accept")
    p.add_argument("--calib", type=Path, default=None,
                   help="TensorRT 10 implicit INT8: folder of line images for IInt8EntropyCalibrator2")
    p.add_argument("--calib-images", type=int, default=500, help="at most this many calibration images")
    p.add_argument("--calib-cache", type=Path, default=None, help="calibration cache (default <engine>.calib)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index")
    p.set_defaults(func=cmd_build_engine)


# -- quantize -----------------------------------------------------------------------------------------------
def cmd_quantize(args: argparse.Namespace) -> int:
    from inspectd.engines.calibrate import CalibrationSet
    from inspectd.engines.compare import model_batch, runtimes_for_models, speed_check
    from inspectd.engines.quantize import quantize_qdq

    product = _product(args.product)
    src = (args.onnx or product.model.path).resolve()
    out = args.out or src.with_name(f"{src.stem}.int8.onnx")
    fixed = model_batch(src)  # a model with a fixed batch (often 1) takes exactly that many images per call
    if fixed is not None and args.batch is not None and args.batch != fixed:
        print(f"inspectd quantize: {src.name} takes batches of {fixed}; --batch {args.batch} cannot feed it "
              f"(leave --batch out to use the model's)", file=sys.stderr)
        return int(ExitCode.CONFIG)
    batch = fixed or args.batch or 8
    data = CalibrationSet.from_folder(product, args.calib, limit=args.limit, batch=batch,
                                      full_only=fixed is not None)
    print(quantize_qdq(src, out, data, args.method, args.percentile).summary())
    if args.check:  # what INT8 buys here: the same verdicts? faster? (on this machine's ONNX Runtime CPU)
        frames = data.frames[:args.check]
        with runtimes_for_models(product, src, out) as (ra, rb):
            check = speed_check(ra, rb, frames, (f"{src.name} (fp32)", f"{out.name} (int8)"))
        print(check.summary())
    return 0


def add_quantize_parser(sub) -> None:
    p = sub.add_parser("quantize", help="INT8 Q/DQ ONNX model by static quantisation on real line images")
    p.add_argument("--product", required=True, type=Path, help="recipe whose preprocessing feeds calibration")
    p.add_argument("--calib", required=True, type=Path, help="folder of line images (labels not needed)")
    p.add_argument("--onnx", type=Path, default=None, help="FP32 model (default: the product's)")
    p.add_argument("--out", type=Path, default=None, help="output (default <model>.int8.onnx)")
    p.add_argument("--method", choices=["entropy", "percentile", "minmax"], default="entropy",
                   help="how activation ranges are chosen from the calibration images")
    p.add_argument("--percentile", type=float, default=99.999, help="for --method percentile")
    p.add_argument("--limit", type=int, default=500, help="at most this many images")
    p.add_argument("--batch", type=int, default=None,
                   help="images per calibration batch (default: the model's fixed batch, else 8)")
    p.add_argument("--check", type=int, default=100, help="then compare INT8 with FP32 on this many of the images: "
                   "verdict agreement and inference p50, with a warning when INT8 is slower or disagrees (0: skip)")
    p.set_defaults(func=cmd_quantize)


# -- convert-fp16 -------------------------------------------------------------------------------------------
def cmd_convert_fp16(args: argparse.Namespace) -> int:
    from inspectd.engines.fp16 import convert_fp16

    src = args.onnx.resolve()
    print(convert_fp16(src, args.out or src.with_name(f"{src.stem}.fp16.onnx")).summary())
    return 0


def add_convert_fp16_parser(sub) -> None:
    p = sub.add_parser("convert-fp16", help="FP16 variant of an ONNX model for the GPU providers (float32 I/O)")
    p.add_argument("--onnx", required=True, type=Path, help="FP32 ONNX model")
    p.add_argument("--out", type=Path, default=None, help="output (default <model>.fp16.onnx)")
    p.set_defaults(func=cmd_convert_fp16)


# -- compare ------------------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    from inspectd.engines.compare import compare, runtimes_for_models
    from inspectd.engines.images import labelled_frames

    product = _product(args.product)
    frames = labelled_frames(args.images, limit=args.limit)
    with runtimes_for_models(product, args.a, args.b) as (ra, rb):
        report = compare(ra, rb, frames, (args.a.name, args.b.name))
    print(report.table(show=args.show or None))
    return 0 if report.agreement >= args.min_agreement else int(ExitCode.FAILURE)


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="two models on the same images: output differences, verdict agreement")
    p.add_argument("--product", required=True, type=Path, help="recipe: preprocessing, classes and rules")
    p.add_argument("--images", required=True, type=Path, help="folder of images")
    p.add_argument("--a", required=True, type=Path, help="reference model (.onnx or engine)")
    p.add_argument("--b", required=True, type=Path, help="candidate model (.onnx or engine)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images")
    p.add_argument("--show", type=int, default=20, help="list at most this many differing images (0: all); "
                   "the rest are counted")
    p.add_argument("--min-agreement", type=float, default=0.0, help="exit 1 below this verdict agreement (0..1)")
    p.set_defaults(func=cmd_compare)


# -- eval ---------------------------------------------------------------------------------------------------
def candidate_models(product_model: Path) -> list[Path]:
    """The product's model and its siblings built from it: <stem>.*.onnx (quantised) and <stem>.*.engine."""
    from inspectd.engines.manifest import ENGINE_SUFFIXES

    stem = product_model.stem
    siblings = sorted(p for p in product_model.parent.glob(f"{stem}.*")
                      if p.suffix in (".onnx", *ENGINE_SUFFIXES) and p != product_model)
    return [product_model, *siblings]


def cmd_eval(args: argparse.Namespace) -> int:
    from inspectd.engines.compare import model_precision, runtime_for_model
    from inspectd.engines.evaluate import evaluate, plot, table
    from inspectd.engines.images import labelled_frames
    from inspectd.engines.misses import listing, write_misses
    from inspectd.engines.roc import read_kinds

    product = _product(args.product)
    frames = labelled_frames(args.images, require_labels=True, limit=args.limit)
    results = []
    for model in args.model or candidate_models(product.model.path):
        try:
            rt = runtime_for_model(product, model.resolve(), threads=args.threads)
        except BackendUnavailable as e:
            print(f"skipped {model.name}: {e}", file=sys.stderr)
            continue
        try:
            results.append(evaluate(rt, frames, precision=model_precision(model), repeat=args.repeat))
        finally:
            rt.close()
    print(table(results))
    for r in results:  # the misclassified images by name, every one of them
        print(f"{r.name}: {len(r.misses)} misclassified" + (":" if r.misses else ""))
        print("\n".join(listing(r)) if r.misses else "", end="\n" if r.misses else "")
        if args.errors and r.misses:
            print(f"  written with heatmaps to {write_misses(r, product, args.errors)}/")
    # per defect kind: labels.csv's kind column (tools/make_dataset.py), else the class the folder layout or a
    # labels file's class_column gave (defect/scratch/x.png -> scratch)
    from inspectd.camera.config import REJECT_LABELS

    kinds = {str(f.meta["file"]): str(f.meta["class"]) for f in frames
             if f.truth == "reject" and str(f.meta.get("class", "")).lower() not in ("", *REJECT_LABELS)}
    kinds.update(read_kinds(args.images))
    for r in results:
        by_kind = r.recall_by_kind(kinds)
        if by_kind:
            print(f"{r.name} recall by kind: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in by_kind.items()))
    if args.png:
        print(f"plot: {plot(results, args.png)}")
    if args.json:
        args.json.write_text(json.dumps([{"model": r.name, "backend": r.backend, "precision": r.precision,
                                          "accuracy": r.accuracy, "auroc": r.auroc, "recall": r.recall,
                                          "specificity": r.specificity, "threshold": r.threshold,
                                          "recall_by_kind": {k: {"rejected": a, "parts": b} for k, (a, b)
                                                             in r.recall_by_kind(kinds).items()},
                                          "p50_ms": r.p(50), "p99_ms": r.p(99),
                                          "confusion": r.confusion.tolist(), "images": r.images}
                                         for r in results], indent=2))
    return 0


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy, AUROC, recall, specificity, confusion and latency of each model "
                                    "on a labelled folder")
    p.add_argument("--product", required=True, type=Path, help="recipe: preprocessing, classes and rules")
    p.add_argument("--images", required=True, type=Path, help="labelled folder (pass/ reject/ or labels.csv)")
    p.add_argument("--model", type=Path, action="append",
                   help="model to evaluate; repeat (default: the product's model and its .int8/.engine siblings)")
    p.add_argument("--repeat", type=int, default=3, help="timing passes over the images")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--limit", type=int, default=None, help="at most this many images")
    p.add_argument("--png", type=lambda s: Path(s) if s else None, default=Path("eval.png"),
                   help="plot file ('' for none)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--errors", type=lambda s: Path(s) if s else None, default=Path("eval-errors"),
                   help="folder for the misclassified images, annotated with their heatmaps and scores, "
                   "per model ('' for none)")
    p.set_defaults(func=cmd_eval)


def add_engine_parsers(sub) -> None:
    for add in (add_build_engine_parser, add_quantize_parser, add_convert_fp16_parser, add_compare_parser,
                add_eval_parser):
        add(sub)
