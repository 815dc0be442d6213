"""Small ONNX models built with onnx.helper for tests that must not depend on the trained demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
