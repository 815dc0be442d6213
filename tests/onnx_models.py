"""Small ONNX models built with onnx.helper for tests that must not depend on the trained demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save_graph(graph: onnx.GraphProto, path: Path) -> Path:
    """Check `graph` as an opset-18, IR-9 model and save it at `path` (its folder created)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def brightness_model(path: Path, width: int = 224, height: int = 224, threshold: float = 0.0) -> Path:
    """logits = [0, mean(input) - threshold]: 'defect' when the normalised image is brighter than `threshold`.
    heatmap = 8x8 average pool of channel mean. Same tensor names as the demo model."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    heat = helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["N", 1, height // 8, width // 8])
    inits = [
        numpy_helper.from_array(np.array([threshold], np.float32), "thr"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["input", "axis1"], ["cmean"], keepdims=1),  # N,1,H,W
        helper.make_node("AveragePool", ["cmean"], ["heatmap"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("GlobalAveragePool", ["cmean"], ["g"]),  # N,1,1,1
        helper.make_node("Flatten", ["g"], ["gf"], axis=1),  # N,1
        helper.make_node("Sub", ["gf", "thr"], ["z"]),
        helper.make_node("Sub", ["z", "z"], ["zero"]),
        helper.make_node("Concat", ["zero", "z"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(nodes, "brightness", [x], [logits, heat], initializer=inits)
    return save_graph(graph, path)


def slow_model(path: Path, matmuls: int = 40, width: int = 224, height: int = 224,
               fail_above: float | None = None) -> Path:
    """The brightness model plus extra compute that depends on the input (ONNX Runtime cannot fold it away):
    `matmuls` chained (3*H x W) @ (W x W) products whose mean, times 0, is added to the logits.
    `fail_above`: inference raises (a Reshape that cannot fit) for every image whose largest normalised value
    is above it -- real frames fail while an all-zero warm-up tensor passes."""
    m = onnx.load(str(brightness_model(path, width, height)))
    g = m.graph
    g.initializer.extend([
        numpy_helper.from_array(np.array([-1, width], np.int64), "rows_shape"),
        # rows sum to 1: the chain neither grows to inf nor shrinks to 0, however long
        numpy_helper.from_array((np.eye(width, dtype=np.float32) * 0.5 + 0.5 / width), "w"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
    ])
    nodes = [helper.make_node("Reshape", ["input", "rows_shape"], ["h0"])]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"h{matmuls}"], ["burn"], keepdims=0),
        helper.make_node("Mul", ["burn", "zero_f"], ["burn0"]),
    ]
    extra = "burn0"
    if fail_above is not None:
        g.initializer.extend([
            numpy_helper.from_array(np.array(fail_above, np.float32), "fail_thr"),
            numpy_helper.from_array(np.array([10], np.int64), "ten"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
        ])
        nodes += [
            helper.make_node("ReduceMax", ["input"], ["mx"], keepdims=0),
            helper.make_node("Greater", ["mx", "fail_thr"], ["bright"]),
            helper.make_node("Cast", ["bright"], ["bright_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["bright_i", "ten"], ["k10"]),
            helper.make_node("Add", ["k10", "one"], ["k"]),  # 1 (fits) or 11 (does not divide 3*H*W)
            helper.make_node("Concat", ["k", "minus1"], ["fail_shape"], axis=0),
            helper.make_node("Reshape", ["input", "fail_shape"], ["r"]),
            helper.make_node("ReduceMean", ["r"], ["rm"], keepdims=0),
            helper.make_node("Mul", ["rm", "zero_f"], ["rm0"]),
            helper.make_node("Add", ["burn0", "rm0"], ["extra"]),
        ]
        extra = "extra"
    # logits = concat(zero, z) + extra: rename the original Concat's output and add
    for n in g.node:
        if n.op_type == "Concat" and list(n.output) == ["logits"]:
            n.output[0] = "logits_raw"
    nodes.append(helper.make_node("Add", ["logits_raw", extra], ["logits"]))
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def odd_output_model(path: Path, kind: str, width: int = 224, height: int = 224) -> Path:
    """The brightness model's graph with a broken `logits` output, for the `bad_output` checks:
    'nan' / 'inf': the defect logit is always NaN / +inf (the self-check refuses it);
    'nan_when_bright': -sqrt(-mean): NaN for an image brighter than mid grey, else finite (a pass, defect score
        below 0.5); the self-check's all-zero input gives 0 (finite);
    'wide': three logits (for a batch of one) for a two-class recipe, a size loading cannot tell."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "C"])
    heat = helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["N", 1, height // 8, width // 8])
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    if kind in ("nan", "inf"):
        inits.append(numpy_helper.from_array(np.array([np.nan if kind == "nan" else np.inf], np.float32), "special"))
    nodes = [
        helper.make_node("ReduceMean", ["input", "axis1"], ["cmean"], keepdims=1),
        helper.make_node("AveragePool", ["cmean"], ["heatmap"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("GlobalAveragePool", ["cmean"], ["g"]),
        helper.make_node("Flatten", ["g"], ["z"], axis=1),  # N,1
        helper.make_node("Sub", ["z", "z"], ["zero"]),
    ]
    if kind in ("nan", "inf"):
        nodes.append(helper.make_node("Add", ["zero", "special"], ["bad"]))
        nodes.append(helper.make_node("Concat", ["zero", "bad"], ["logits"], axis=1))
    elif kind == "nan_when_bright":
        nodes += [helper.make_node("Neg", ["z"], ["nz"]), helper.make_node("Sqrt", ["nz"], ["root"]),
                  helper.make_node("Neg", ["root"], ["bad"]),
                  helper.make_node("Concat", ["zero", "bad"], ["logits"], axis=1)]
    elif kind == "wide":  # the width comes from the batch size (N + 2), so no shape inference can know it
        inits += [numpy_helper.from_array(np.array([0], np.int64), "i0"),
                  numpy_helper.from_array(np.array([2], np.int64), "i2")]
        nodes += [helper.make_node("Shape", ["input"], ["shape"], start=0, end=1),
                  helper.make_node("Add", ["shape", "i2"], ["width"]),
                  helper.make_node("Concat", ["zero", "z", "z", "z", "z"], ["five"], axis=1),
                  helper.make_node("Slice", ["five", "i0", "width", "axis1"], ["logits"])]
    else:
        raise ValueError(kind)
    graph = helper.make_graph(nodes, f"odd_{kind}", [x], [logits, heat], initializer=inits)
    return save_graph(graph, path)


def anomalib_model(path: Path, width: int = 64, height: int = 64, poison: str = "") -> Path:
    """A graph with an anomalib export's signature: input `input` N x 3 x H x W (0..1), outputs `pred_score`
    N x 1, `pred_label` (bool), `anomaly_map` N x 1 x H x W and `pred_mask` (bool), scores normalised as
    anomalib's post-processor does, ((raw - threshold) / (max - min)) + 0.5 clipped to 0..1. Raw = |grey - 0.5|,
    threshold 0.2, range 0.4: a mid-grey part is 0 everywhere, a white or black mark is 1. A broken export:
    `poison="all"` makes every output NaN, `poison="marked"` makes the score +inf on marked parts only (a uniform
    frame is no marked part: the model passes the self-check and fails on those parts in a run)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])
    outs = [helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("pred_label", TensorProto.BOOL, ["N", 1]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, height, width]),
            helper.make_tensor_value_info("pred_mask", TensorProto.BOOL, ["N", 1, height, width])]
    f = lambda v, name: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    inits = [f(0.5, "grey"), f(0.2, "thr"), f(1 / 0.4, "inv_range"), f(0.5, "half"), f(0.0, "zero"),
             f(1.0, "one"), f(np.nan if poison == "all" else 1.0, "poison"), f(0.9, "hot"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes23")]
    nodes = [
        helper.make_node("ReduceMean", ["input", "axis1"], ["g"], keepdims=1),
        helper.make_node("Sub", ["g", "grey"], ["d"]),
        helper.make_node("Abs", ["d"], ["raw"]),
        helper.make_node("Sub", ["raw", "thr"], ["r1"]),
        helper.make_node("Mul", ["r1", "inv_range"], ["r2"]),
        helper.make_node("Add", ["r2", "half"], ["r3"]),
        helper.make_node("Clip", ["r3", "zero", "one"], ["m"]),
        helper.make_node("Mul", ["m", "poison"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map", "axes23"], ["s4"], keepdims=1),
        helper.make_node("Flatten", ["s4"], ["s2"], axis=1),
        # "marked": divide by (1 - [score > 0.9 and part of the map below 0.5]), +inf where a mark is on a part;
        # a uniform frame (the self-check's all-zero input is uniformly black) keeps a finite score
        helper.make_node("Greater", ["s2", "hot"], ["is_hot"]),
        helper.make_node("Cast", ["is_hot"], ["hot_any"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMin", ["anomaly_map", "axes23"], ["lo4"], keepdims=1),
        helper.make_node("Flatten", ["lo4"], ["lo2"], axis=1),
        helper.make_node("Less", ["lo2", "half"], ["has_cool"]),
        helper.make_node("Cast", ["has_cool"], ["cool_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hot_any", "cool_f"], ["hot_f"]),
        helper.make_node("Mul", ["hot_f", "one" if poison == "marked" else "zero"], ["hot_w"]),
        helper.make_node("Sub", ["one", "hot_w"], ["denom"]),
        helper.make_node("Div", ["s2", "denom"], ["pred_score"]),
        helper.make_node("Greater", ["pred_score", "half"], ["pred_label"]),
        helper.make_node("Greater", ["anomaly_map", "half"], ["pred_mask"]),
    ]
    graph = helper.make_graph(nodes, "anomalib_like", [x], outs, initializer=inits)
    return save_graph(graph, path)
