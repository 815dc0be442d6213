"""PatchCore-style memory bank on EfficientNet-Lite0 patch features, and its export as one ONNX graph.

Needs torch (the `train` extra). The graph the daemon runs: backbone cut after block 10 → mid-level patch
features (block 4 at stride 8 + block 10 at stride 16 upsampled, 152 channels, 3x3 neighbourhood average) →
squared distance to every memory-bank entry as one MatMul → nearest entry per patch → `anomaly_map` (the
patch distances upsampled to the input size) and `score` (the largest patch distance).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inspectd.anomaly.backbone import EfficientNetLite0, fold_batchnorm, pretrained

FEATURE_BLOCKS = (4, 10)  # last block of stage 3 (40 ch, stride 8) and of stage 5 (112 ch, stride 16)
STRIDE = 8  # of the patch grid
Progress = Callable[[int, int], None]  # (done, total)


class PatchFeatures(nn.Module):
    """EfficientNet-Lite0 up to block 10; per-patch features on the stride-8 grid."""

    def __init__(self, backbone: EfficientNetLite0, blocks: tuple[int, int] = FEATURE_BLOCKS) -> None:
        super().__init__()
        self.backbone = backbone
        self.blocks = blocks
        self.trunk = nn.ModuleList(backbone._blocks[: blocks[-1] + 1])  # the rest is never run nor exported

    @property
    def dim(self) -> int:
        return sum(self.trunk[b]._project_conv.out_channels for b in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.stem(x)
        taps = []
        for i, block in enumerate(self.trunk):
            x = block(x)
            if i in self.blocks:
                taps.append(x)
        size = taps[0].shape[-2:]
        f = torch.cat([taps[0], *(nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
                                  for t in taps[1:])], dim=1)
        # A patch is its 3x3 neighbourhood (PatchCore's local aggregation): one-pixel shifts do not look new.
        return nn.functional.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)


def feature_extractor(size: int) -> PatchFeatures:
    model = pretrained(size)
    fold_batchnorm(model)
    return PatchFeatures(model).eval()


class PatchCore(nn.Module):
    """Features → distance to the bank → (score N x 1, anomaly_map N x 1 x H x W). What gets exported."""

    def __init__(self, features: PatchFeatures, bank: torch.Tensor, size: tuple[int, int]) -> None:
        super().__init__()
        self.features = features
        self.size = size
        self.grid = (math.ceil(size[0] / STRIDE), math.ceil(size[1] / STRIDE))
        # |f - b|^2 = |f|^2 - 2 f.b + |b|^2: one MatMul against [-2 B^T] plus a row of |b|^2 (B is M x D)
        self.register_buffer("w", (-2.0 * bank.T).contiguous())
        self.register_buffer("b2", (bank * bank).sum(1))

    def patch_distances(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).flatten(2).transpose(1, 2)  # N, P, D
        d2 = torch.matmul(f, self.w) + self.b2 + (f * f).sum(-1, keepdim=True)  # N, P, M
        return d2.amin(-1).clamp_min(0.0).sqrt().reshape(-1, 1, *self.grid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.patch_distances(x)
        score = patches.amax(dim=(2, 3))  # N, 1: the part is as anomalous as its worst patch
        amap = nn.functional.interpolate(patches, size=self.size, mode="bilinear", align_corners=False)
        return score, amap


@torch.no_grad()
def extract(features: PatchFeatures, tensors: np.ndarray, batch: int = 16,
            progress: Progress | None = None) -> torch.Tensor:
    """Patch features of every image, (images x patches) x D, float32."""
    out = []
    for i in range(0, len(tensors), batch):
        f = features(torch.from_numpy(tensors[i:i + batch]))
        out.append(f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1]))
        if progress:
            progress(min(i + batch, len(tensors)), len(tensors))
    return torch.cat(out)


@torch.no_grad()
def greedy_coreset(x: torch.Tensor, k: int, *, project: int = 128, seed: int = 0,
                   progress: Progress | None = None) -> torch.Tensor:
    """Indices of `k` rows chosen farthest-first (k-center greedy, as PatchCore): each new entry is the patch
    worst covered by those chosen so far, so rare good patterns are kept. Distances in a fixed random
    projection to `project` dimensions (Johnson-Lindenstrauss) to halve the work; deterministic by seed."""
    n = x.shape[0]
    if k >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    if project and project < x.shape[1]:
        x = x @ (torch.randn(x.shape[1], project, generator=gen) / math.sqrt(project))
    sq = (x * x).sum(1)
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=gen))
    mind = torch.full((n,), float("inf"))
    every = max(1, k // 200)
    for i in range(k):
        c = x[chosen[i]]
        torch.minimum(mind, sq - 2.0 * (x @ c) + c @ c, out=mind)
        if i + 1 < k:
            chosen[i + 1] = int(torch.argmax(mind))
        if progress and (i + 1) % every == 0:
            progress(i + 1, k)
    return chosen


def export_onnx(model: PatchCore, path: Path, channels: int = 3) -> float:
    """Write the graph (opset 17, batch axis dynamic, outputs `score` and `anomaly_map`); returns seconds."""
    t0 = time.perf_counter()
    dummy = torch.zeros(1, channels, *model.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(model, dummy, str(tmp), opset_version=17, dynamo=False, input_names=["input"],
                      output_names=["score", "anomaly_map"], do_constant_folding=True,
                      dynamic_axes={"input": {0: "N"}, "score": {0: "N"}, "anomaly_map": {0: "N"}})
    # Constant folding of the exporter leaves the asymmetric Pads' amounts as small subgraphs; ONNX Runtime's
    # basic level (standard ONNX ops out) turns them into plain initializers, as TensorRT wants.
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(path)
    ort.InferenceSession(str(tmp), sess_options=opts, providers=["CPUExecutionProvider"])
    tmp.unlink()
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return time.perf_counter() - t0
