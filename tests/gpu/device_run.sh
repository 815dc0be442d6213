#!/bin/bash
# The GPU run of the TensorRT memory/stream layer on the `device` machine (it has nvcc but no pycuda, no network).
# Fill .whl-trt/ here first (ignored by git): the pycuda sdist and wheels (cp312, manylinux) of pytools,
# platformdirs, mako, siphash24, pydantic, pydantic-core, annotated-types, typing-inspection, structlog.
# Then: run(command="bash tests/gpu/device_run.sh", carry=[".whl-trt"]). Logs land in $OUT.
set -o pipefail
R=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-trt/*.whl || exit 1
export PYTHONPATH=/tmp/site:/tmp/pycuda-2026.1:$R PYTHONUNBUFFERED=1
{ nvidia-smi -L; command -v nvcc; nvcc --version | tail -2; python3 -V; } 2>&1 | tee "$OUT/env.txt"
cd /tmp && tar xzf "$R"/.whl-trt/pycuda-*.tar.gz && cd pycuda-2026.1 || exit 1
start=$(date +%s)
python3 setup.py build_ext --inplace -j 16 > "$OUT/pycuda_build.log" 2>&1   # nvcc found on PATH
echo "pycuda build_ext rc=$? in $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
cd "$R" || exit 1
python3 -m pytest -p no:cacheprovider -v -s -rs tests/gpu/test_cuda_buffers.py 2>&1 | tee "$OUT/gpu_cuda_buffers.log"
[ "${1:-}" = "--bench" ] && python3 tools/cuda_contexts.py --out "$OUT" 2>&1 | tee "$OUT/cuda_contexts.txt"
exit 0
