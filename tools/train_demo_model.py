"""Train the demo defect model for product disc-a and export it to ONNX.

    .venv-train/bin/python tools/train_demo_model.py            # -> engines/demo_disc.onnx

Needs torch (the `train` extra, in its own venv); the daemon never does. Training data are
synthetic parts from `inspectd.camera.parts` at the camera's 448x448, passed through the
product's own CpuPreprocessor. The net is fully convolutional and learns the generator's
defect masks on a 28x28 grid; the part's verdict is the maximum over that heatmap, so a
reject always points at the cells that caused it. Same seed, same model.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
from demo_parts import KINDS, PRODUCT, PartSet, make_set, recipe


def build_model():  # torch imported lazily so `--help` and the dataset step do not wait for it
    import torch
    from torch import nn

    def cbr(ci: int, co: int, stride: int = 1, k: int = 3) -> nn.Sequential:
        conv = nn.Conv2d(ci, co, k, stride, 0 if k == stride else k // 2, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(co), nn.ReLU(inplace=True))

    class DiscDefectNet(nn.Module):
        """224 -> 28x28 local features, plus a 14x14 context stage whose wide receptive field sees
        the rim's curvature (a chip is only visible as a bite missing from an otherwise round edge).
        The stem is a 4x4 stride-4 conv: no 112x112 maps to compute, and a bank of 4x4 filters
        still sees a 1-px line at any phase."""

        def __init__(self) -> None:
            super().__init__()
            self.local = nn.Sequential(cbr(3, 24, 4, k=4), cbr(24, 48, 2), cbr(48, 48))  # -> 28x28
            self.context = nn.Sequential(cbr(48, 64, 2), cbr(64, 64), cbr(64, 64))  # -> 14x14
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fuse = nn.Sequential(cbr(48 + 64, 48, k=1), cbr(48, 48))
            self.head = nn.Conv2d(48, 1, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.local(x)
            f = self.fuse(torch.cat([f, self.up(self.context(f))], dim=1))
            heatmap = self.head(f)  # N,1,28,28 defect logits
            z = torch.amax(heatmap, dim=(1, 2, 3)).unsqueeze(1)  # the part is as defective as its worst cell
            # softmax([-z/2, z/2]) = [1 - sigmoid(z), sigmoid(z)]: the recipe's [good, defect]
            return torch.cat([-0.5 * z, 0.5 * z], dim=1), heatmap

    return DiscDefectNet()


def fold_batchnorm(model):
    """Copy of an eval-mode model with every BatchNorm folded into the conv before it (plain Conv in ONNX)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[0], nn.Conv2d) \
                and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return fused


def predict(model, data: PartSet, batch: int = 128) -> np.ndarray:
    """Defect logit per part."""
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        z = [model(torch.from_numpy(data.tensors(slice(i, i + batch))).to(device))[0][:, 1] * 2
             for i in range(0, len(data), batch)]
    model.train(was)
    return torch.cat(z).cpu().numpy()


def report(z: np.ndarray, data: PartSet) -> str:
    rejected = z >= 0  # p_defect >= 0.5, the recipe's rule
    parts = [f"acc {np.mean(rejected == (data.kinds > 0)):.4f}"]
    for k, name in enumerate(KINDS):
        sel = data.kinds == k
        if sel.any():
            rate = np.mean(rejected[sel]) if k else np.mean(~rejected[sel])
            parts.append(f"{'specificity' if k == 0 else name} {rate:.3f}")
    return " ".join(parts)


def fit(model, train: PartSet, val: PartSet, epochs: int, batch: int, lr: float, pos_weight: float, seed: int,
        device: str = "cpu", guided: bool = True) -> None:
    """AdamW with a one-cycle schedule on heatmap BCE (defect cells weighted) + verdict BCE; one line per epoch.

    guided: a defective part's verdict loss looks at its worst *true defect* cell rather than its worst
    cell anywhere, so a missed chip pushes up the cells at the bite instead of whichever cell happens to
    be highest (the chip otherwise stays unlearnt for most of a run)."""
    import torch
    import torch.nn.functional as F

    model.to(device)
    steps_per_epoch = (len(train) + batch - 1) // batch
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    weight = torch.tensor(pos_weight, device=device)
    labels = torch.from_numpy(train.labels)
    masks = torch.from_numpy(train.masks[:, None].astype(np.float32))
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(train))
        total = 0.0
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * batch:(step + 1) * batch])
            x = torch.from_numpy(train.tensors(idx)).to(device)
            m, y = masks[idx].to(device), labels[idx].to(device)
            # A random symmetry of the square per batch: defects have no preferred side or orientation.
            flip = rng.integers(0, 2, 3)
            for axis in (2, 3):
                if flip[axis - 2]:
                    x, m = x.flip(axis), m.flip(axis)
            if flip[2]:
                x, m = x.transpose(2, 3), m.transpose(2, 3)
            logits, heatmap = model(x)
            z = logits[:, 1] * 2
            if guided:
                z_defect = torch.amax(heatmap.masked_fill(m == 0, -1e4), dim=(1, 2, 3))
                z = torch.where(m.flatten(1).amax(1) > 0, z_defect, z)  # parts with a marked defect
            loss = (F.binary_cross_entropy_with_logits(heatmap, m, pos_weight=weight)
                    + F.binary_cross_entropy_with_logits(z, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs} loss {total / len(train):.4f} val {report(predict(model, val), val)}"
              f" elapsed {time.perf_counter() - t0:.0f}s", flush=True)
    model.to("cpu")


def export_onnx(model, path: Path, sample: np.ndarray) -> None:
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fused = fold_batchnorm(model)
    torch.onnx.export(fused, torch.from_numpy(sample), str(path), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits", "heatmap"], do_constant_folding=True,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}, "heatmap": {0: "N"}})
    m = onnx.load(str(path))  # weights inside the file: no external data
    onnx.checker.check_model(m, full_check=True)
    return sorted({n.op_type for n in m.graph.node})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--product", type=Path, default=PRODUCT, help="recipe whose preprocessing and model path to use")
    ap.add_argument("--out", type=Path, help="ONNX file to write (default: the recipe's model.path)")
    ap.add_argument("--train", type=int, default=5000, help="training parts (half good, defect kinds balanced)")
    ap.add_argument("--val", type=int, default=1000, help="validation parts (natural defect mix), other seed")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pos-weight", type=float, default=30.0, help="weight of defect cells in the heatmap loss")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="processes generating parts")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="torch device to train on (cpu: the measured, deterministic path)")
    args = ap.parse_args()
    out = args.out or recipe(args.product).model.path

    t0 = time.perf_counter()
    train = make_set(args.seed * 1000 + 1, args.train, "balanced", args.workers)
    val = make_set(args.seed * 1000 + 2, args.val, "natural", args.workers)
    t_gen = time.perf_counter() - t0
    print(f"generated {len(train)} train + {len(val)} val parts at 448x448 -> 224 in {t_gen:.1f}s", flush=True)

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.device == "cpu")  # CUDA would need CUBLAS_WORKSPACE_CONFIG too
    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model DiscDefectNet: {n_params} parameters", flush=True)

    t1 = time.perf_counter()
    fit(model, train, val, args.epochs, args.batch, args.lr, args.pos_weight, args.seed, args.device)
    t_train = time.perf_counter() - t1

    model.eval()
    z_val = predict(model, val)
    ops = export_onnx(model, out, val.tensors(slice(0, 1)))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, heat = [], []
    for i in range(0, len(val), 64):
        lo, hm = sess.run(["logits", "heatmap"], {"input": val.tensors(slice(i, i + 64))})
        logits.append(lo)
        heat.append(hm)
    with torch.no_grad():
        _, ref_heat = model(torch.from_numpy(val.tensors(slice(0, 64))))
    d_logit = np.abs(np.concatenate(logits)[:, 1] * 2 - z_val).max()
    d_heat = np.abs(heat[0] - ref_heat.numpy()).max()
    z_ort = np.concatenate(logits)[:, 1] * 2
    agree = np.mean((z_ort >= 0) == (z_val >= 0))
    print(f"ONNX {out} ({out.stat().st_size / 1024:.0f} KiB, opset 17, ops: {', '.join(ops)})")
    print(f"ONNX Runtime vs torch: max |d logit| {d_logit:.2e}, max |d heatmap| {d_heat:.2e}, "
          f"verdicts agree {agree:.4f}")
    if d_logit > 1e-3 or d_heat > 1e-3:
        raise SystemExit("ONNX Runtime and torch disagree: export is wrong")
    print(f"SUMMARY params {n_params}, generation {t_gen:.0f}s, training {t_train:.0f}s "
          f"({args.epochs} epochs x {len(train)} parts, batch {args.batch}), total {time.perf_counter() - t0:.0f}s; "
          f"val (ONNX) {report(z_ort, val)}")


if __name__ == "__main__":
    main()
