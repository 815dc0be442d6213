#!/bin/bash
# GPU run of ONNX Runtime's CUDA provider inside inspectd, on the `device` machine (CUDA 13, no network).
# Needs, carried or already unpacked there:
#   .whl-trt/  pycuda sdist + wheels (cp312): pytools platformdirs mako siphash24 pydantic pydantic-core
#              annotated-types typing-inspection structlog pyyaml pymodbus python-snap7 paho-mqtt (see device_run.sh)
#   /tmp/ort/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl  (joined from 58 MB chunks, sha256 checked)
#   optional .pycuda/pycuda-built.tgz: /tmp/pycuda-2026.1 as an earlier call built it (saves the ~107 s build)
#   .whl-gen/  optional, for tests/gpu/test_genicam_gpu.py: harvesters 1.4.3 + genicam 1.6.0 (cp312) wheels and
#              producers/TLSimu.cti + libVirtualFG.so (from the genicam 1.5.0 wheel; never committed)
# Then: bash tests/gpu/device_ort.sh [tests|bench|all]. Logs land in $OUT.
set -o pipefail
R=$PWD
what=${1:-all}
if [ ! -d /tmp/site/pydantic ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-trt/*.whl || exit 1
fi
if [ ! -d /tmp/site/onnxruntime ] || ! grep -q gpu /tmp/site/onnxruntime*/METADATA 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/ort/onnxruntime_gpu-*.whl || exit 1
fi
if [ -d .whl-gen ] && [ ! -d /tmp/site/harvesters ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-gen/*.whl || exit 1
  mkdir -p .cache/genicam/producers && cp .whl-gen/producers/* .cache/genicam/producers/ || exit 1
fi
if [ ! -f /tmp/pycuda-2026.1/pycuda/_driver*.so ] && [ -f .pycuda/pycuda-built.tgz ]; then
  tar xzf .pycuda/pycuda-built.tgz -C /tmp  # built there by an earlier call (this script's own build, tarred)
fi
if [ ! -f /tmp/pycuda-2026.1/pycuda/_driver*.so ]; then
  (cd /tmp && tar xzf "$R"/.whl-trt/pycuda-*.tar.gz && cd pycuda-2026.1 && \
   python3 setup.py build_ext --inplace -j 16 > "$OUT/pycuda_build.log" 2>&1) || { tail -20 "$OUT/pycuda_build.log"; exit 1; }
fi
export PYTHONPATH=/tmp/site:/tmp/pycuda-2026.1:$R PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -V; python3 -c 'import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())'; } 2>&1 | tee "$OUT/env.txt"
if [ "$what" = tests ] || [ "$what" = all ]; then
  python3 -m pytest -p no:cacheprovider -q -rs tests/gpu tests/test_ort_providers.py tests/test_bench_json.py 2>&1 | tee "$OUT/gpu_tests.log"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 tools/bench_gpu_models.py --out "$OUT" 2>&1 | tee "$OUT/bench_gpu_models.txt"
fi
exit 0
