"""A small fitted defect classifier and labelled part images for the engine-tool tests.

The trained demo model may not be present in a clean clone; this one is built in seconds: fixed
convolution filters (centre-surround and edge detectors, as a defect detector would learn), features
pooled globally, and a logistic-regression head fitted on generated parts. Same tensor names as the
demo model (input / logits / heatmap), dynamic batch.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from inspectd.camera.parts import make_part, random_kind

SIZE = 224
ROOT = Path(__file__).resolve().parent.parent


def write_parts(folder: Path, n: int, seed: int, defect_rate: float = 0.4, size: int = SIZE) -> Path:
    """n Mono8 PNG parts under folder/pass and folder/reject."""
    rng = np.random.default_rng(seed)
    for label in ("pass", "reject"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = random_kind(rng, defect_rate)
        img, _ = make_part(rng, size, kind)
        cv2.imwrite(str(folder / ("reject" if kind else "pass") / f"part{i:04d}.png"), img)
    return folder


def _filters(rng: np.random.Generator) -> np.ndarray:
    """(8, 3, 5, 5): filters on the channel mean, so a grey part gives the same response on any colour order."""
    yy, xx = np.mgrid[-2:3, -2:3].astype(np.float32)

    def g(sigma: float) -> np.ndarray:
        k = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        return k / k.sum()

    base = [g(0.7) - g(2.0), g(2.0) - g(0.7), xx * g(1.2), yy * g(1.2), (xx + yy) * g(1.2), (xx - yy) * g(1.2)]
    base += [rng.standard_normal((5, 5)).astype(np.float32) * 0.2 for _ in range(2)]
    w = np.stack(base)[:, None] / 3.0
    return np.repeat(w, 3, axis=1).astype(np.float32)


def _graph(w1: np.ndarray, head: tuple[np.ndarray, ...] | None) -> onnx.ModelProto:
    """Features model when `head` is None, else the classifier with head = (mu, sd, w, b): features are
    standardised per branch before the linear head, so each tensor INT8 sees has a sane range."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
             numpy_helper.from_array(np.full((1, 8, 1, 1), 1 / 8, np.float32), "wh"),
             numpy_helper.from_array(np.ones(3, np.float32), "s3"),
             numpy_helper.from_array(np.zeros(3, np.float32), "z3")]
    nodes = [
        helper.make_node("InstanceNormalization", ["input", "s3", "z3"], ["xn"]),  # cancels exposure jitter
        helper.make_node("Conv", ["xn", "w1", "b1"], ["c1"], pads=[2, 2, 2, 2], strides=[2, 2]),
        helper.make_node("Abs", ["c1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["m1"], kernel_shape=[4, 4], strides=[4, 4]),  # N,8,28,28
        helper.make_node("Conv", ["m1", "wh"], ["heatmap"]),  # N,1,28,28
        helper.make_node("GlobalMaxPool", ["m1"], ["gmax"]),
        helper.make_node("GlobalAveragePool", ["m1"], ["gavg"]),
    ]
    if head is None:
        nodes += [helper.make_node("Concat", ["gmax", "gavg"], ["g"], axis=1),
                  helper.make_node("Flatten", ["g"], ["feat"], axis=1)]
        outs = [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", 16])]
    else:
        mu, sd, w, b = head
        head_w = np.zeros((2, 16), np.float32)
        head_w[1] = w
        for i, branch in enumerate(("gmax", "gavg")):
            sl = slice(8 * i, 8 * i + 8)
            inits += [numpy_helper.from_array(mu[sl].reshape(1, 8, 1, 1).astype(np.float32), f"mu_{branch}"),
                      numpy_helper.from_array(sd[sl].reshape(1, 8, 1, 1).astype(np.float32), f"sd_{branch}")]
            nodes += [helper.make_node("Sub", [branch, f"mu_{branch}"], [f"{branch}_c"]),
                      helper.make_node("Div", [f"{branch}_c", f"sd_{branch}"], [f"{branch}_z"])]
        inits += [numpy_helper.from_array(head_w, "hw"), numpy_helper.from_array(np.array([0, b], np.float32), "hb")]
        nodes += [helper.make_node("Concat", ["gmax_z", "gavg_z"], ["g"], axis=1),
                  helper.make_node("Flatten", ["g"], ["feat"], axis=1),
                  helper.make_node("Gemm", ["feat", "hw", "hb"], ["logits"], transB=1)]
        outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]),
                helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["N", 1, 28, 28])]
    model = helper.make_model(helper.make_graph(nodes, "parts", [x], outs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def product_dict(model: Path, golden: list[dict] | None = None) -> dict:
    pr = yaml.safe_load((ROOT / "configs" / "demo" / "products" / "disc-a.yaml").read_text())
    pr["model"]["path"] = str(model)
    pr["preprocess"]["roi"] = {"x": 0, "y": 0, "width": 0, "height": 0}
    if golden is not None:
        pr["golden"] = golden
    return pr


def write_product(folder: Path, model: Path, golden: list[dict] | None = None) -> Path:
    path = folder / "product.yaml"
    path.write_text(yaml.safe_dump(product_dict(model, golden), sort_keys=False))
    return path


def fitted_model(path: Path, train: Path) -> Path:
    """Fit the logistic head on the images in `train` and write the full classifier to `path`."""
    import onnxruntime as ort

    from inspectd.config.load import load_product
    from inspectd.engines.calibrate import CalibrationSet

    w1 = _filters(np.random.default_rng(7))
    feat_path = path.with_name(path.stem + "_features.onnx")
    onnx.save(_graph(w1, None), str(feat_path))
    product = load_product(write_product(path.parent, feat_path))
    data = CalibrationSet.from_folder(product, train, batch=16)
    sess = ort.InferenceSession(str(feat_path), providers=["CPUExecutionProvider"])
    feats = np.concatenate([sess.run(["feat"], {"input": b})[0] for b in data.batches()])
    y = np.array([f.truth == "reject" for f in data.frames], np.float64)
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mu) / sd
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(3000):  # plain gradient descent on the logistic loss, light L2
        p = 1 / (1 + np.exp(-(z @ w + b)))
        w -= 0.5 * (z.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.5 * float(np.mean(p - y))
    onnx.save(_graph(w1, (mu, sd, w.astype(np.float32), b)), str(path))
    return path


def parts_dataset(root: Path, train: int = 200, calib: int = 48, test: int = 160) -> dict[str, Path]:
    """Fitted model, product file and three disjoint labelled folders (different seeds) under `root`."""
    folders = {name: write_parts(root / name, n, seed) for name, n, seed in
               (("train", train, 1), ("calib", calib, 3), ("test", test, 2))}
    model = fitted_model(root / "parts.onnx", folders["train"])
    return {**folders, "model": model, "product": write_product(root, model)}


TRT_RTX_PIN = "tensorrt-rtx-cu13==1.7.1.116"
TRT_RTX_DIR = ROOT / ".cache" / "tensorrt-rtx"


def import_tensorrt_rtx():
    """TensorRT-RTX's Python module, pip-installed into .cache/tensorrt-rtx on first use (about 100 MB:
    too large for the dev extra). Returns (module, None) or (None, reason to skip)."""
    import importlib
    import subprocess
    import sys

    if not (TRT_RTX_DIR / "tensorrt_rtx").is_dir():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
               str(TRT_RTX_DIR), TRT_RTX_PIN]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return None, f"pip install {TRT_RTX_PIN} timed out"
        if res.returncode != 0:
            return None, f"pip install {TRT_RTX_PIN} failed: {res.stderr.strip()[-300:]}"
    if str(TRT_RTX_DIR) not in sys.path:
        sys.path.append(str(TRT_RTX_DIR))
    try:
        return importlib.import_module("tensorrt_rtx"), None
    except ImportError as e:  # e.g. a platform without its wheels
        return None, f"tensorrt_rtx installed in {TRT_RTX_DIR} but does not import: {e}"


def dynamic_hw_model(path: Path) -> Path:
    """The fixture classifier's features in a model whose H and W are dynamic (one engine, several sizes)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["logits"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "dyn", [x], [out], initializer=[w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
