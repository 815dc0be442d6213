"""Inference backends behind one protocol: ONNX Runtime (CPU, embedded default) and TensorRT."""
