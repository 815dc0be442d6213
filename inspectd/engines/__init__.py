"""Engine lifecycle: build, quantise, manifest and verify, compare, evaluate, golden gate.

Nothing here imports TensorRT; functions that need it take the module (see inspectd.infer.tensorrt.load_trt).
"""
