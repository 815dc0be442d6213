"""Frame -> model input tensor. `cpu` (OpenCV) is the reference; `gpu` (CUDA) sits beside it."""
