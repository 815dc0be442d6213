"""GPU memory across SIGHUP reloads of the real daemon: ONNX Runtime's CUDA provider, `preprocess: gpu`, the demo
model swapped with its FP16 variant and CUDA graphs switched on and off between reloads
(tools/gpu_reload_memory.py, 8 reloads: the first 3 settle). A reload that captures a graph while the pipeline
runs must neither be refused nor fail a part safe (the capture holds the GPU to itself: CaptureGate).
Asserts the tool's rule (device memory, RSS, page-locked host memory, threads and descriptors within tolerance
of the settled baseline), that parts flowed through every reload and that every part got exactly one verdict.
The JSON, plot and daemon log go to $OUT when set (the GPU machine), else tmp_path.

Skipped (with the reason) without onnxruntime-gpu, pycuda, a CUDA device and nvidia-smi. On the GPU machine:
    bash tests/gpu/device_ort.sh tests
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.gpu.test_ort_gpu import REASON

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(REASON is not None, reason=f"needs the CUDA provider: {REASON}"),
              pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs nvidia-smi (device memory)")]


def test_gpu_memory_stays_flat_across_reloads(tmp_path: Path) -> None:
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else tmp_path
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_reload_memory.py"), "--variant", "gpu",
                           "--reloads", "8", "--settle", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=1500, cwd=ROOT)
    print(proc.stdout)
    doc = json.loads((out / "gpu_reload_memory_gpu.json").read_text())
    assert doc["problems"] == [] and doc["rejected"] == [], proc.stdout[-4000:] + proc.stderr[-4000:]
    assert doc["leaks"] == []  # pycuda skipped no free, no session outlived its backend
    judged = {j["metric"]: j for j in doc["judgements"]}
    assert judged["device_mib"]["ok"] is not None, doc["device_source"]  # measured, not unavailable
    assert all(j["ok"] is not False for j in judged.values()), proc.stdout[-3000:]
    assert proc.returncode == 0
    samples = doc["samples"]
    assert all(s["device_mib"] > 0 for s in samples)
    assert {s["model"] for s in samples} == {"fp32", "fp16"} and {s["cuda_graph"] for s in samples} == {False, True}
    counts = [s["journaled"] for s in samples]
    assert all(b > a for a, b in itertools.pairwise(counts)), counts  # parts flowed through each reload
    v = doc["verdicts"]
    assert v["parts_in"] == v["verdicts"] == v["journaled"] == v["rows"] == v["distinct_seq"] >= counts[-1]
    assert "stage_error" not in v["failsafe_reasons"]  # no part met a runtime closed under it
