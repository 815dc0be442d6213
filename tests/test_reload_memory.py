"""Memory across repeated SIGHUP reloads, on the CPU path (the GPU run is tests/gpu/test_reload_gpu_memory.py).

tools/gpu_reload_memory.py against the real daemon with the CPU provider and `preprocess: cpu`: its sampling and
parsing work (nvidia-smi absent: device memory reported unavailable, not a crash), RSS stays within the tool's
rule, parts flow through every reload and each gets exactly one verdict. Beside it, in-process: a runtime retired
by a reload is closed *and* garbage -- nothing keeps its ONNX Runtime session alive (on a GPU that would be device
memory held for good) -- and the rule itself fails on growth.
"""

from __future__ import annotations

import gc
import itertools
import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_reload_safety import reload_and_wait, running
from tests.waiting import wait_until

sys.path.insert(0, str(ROOT / "tools"))

import gpu_reload_memory as grm


def test_the_tool_runs_the_daemon_through_reloads_and_finds_rss_flat(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_reload_memory.py"), "--variant", "cpu",
                           "--reloads", "8", "--settle", "3", "--rate-hz", "30", "--out", str(out),
                           "--nvidia-smi", "nvidia-smi-not-installed-here"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "gpu_reload_memory_cpu.json").read_text())
    assert (out / "gpu_reload_memory_cpu.png").stat().st_size > 0
    assert doc["problems"] == [] and doc["leaks"] == [] and doc["rejected"] == [] and doc["exit_code"] == 0
    samples = doc["samples"]
    assert [s["reload"] for s in samples] == list(range(9))
    # device memory: unavailable, said so, and not judged
    assert doc["device_source"].startswith("unavailable: nvidia-smi-not-installed-here not found")
    assert all(s["device_mib"] is None for s in samples)
    judged = {j["metric"]: j for j in doc["judgements"]}
    assert judged["device_mib"]["ok"] is None
    # read from the daemon's /proc: a real RSS, its threads and descriptors
    assert all(s["rss_mib"] > 50 for s in samples) and all(s["threads"] > 3 and s["fds"] > 3 for s in samples)
    assert judged["rss_mib"]["ok"] is True and judged["threads"]["ok"] is True and judged["fds"]["ok"] is True
    # the reloads really rebuilt from both models, and parts kept flowing through each of them
    assert [s["model"] for s in samples[:5]] == ["fp32", "fp32", "fp16", "fp16", "fp32"]
    assert len(doc["verdicts"]["models"]) == 2
    counts = [s["journaled"] for s in samples]
    assert all(b > a for a, b in itertools.pairwise(counts)), counts
    # every part the daemon took: exactly one verdict, journaled
    v = doc["verdicts"]
    assert v["parts_in"] == v["verdicts"] == v["journaled"] == v["rows"] == v["distinct_seq"] >= counts[-1]
    assert "stage_error" not in v["failsafe_reasons"]
    assert "memory flat" in proc.stdout and "rss_mib" in proc.stdout


def test_the_rule_fails_on_growth_after_the_settling_reloads() -> None:
    settle = 3
    flat = [100, 130, 150, 160, 158, 161, 159, 160]  # allocator caches grow, then settle
    leak = [100, 104, 108, 112, 116, 120, 124, 128]  # 4 per reload, for good
    assert grm.judge(flat, settle, 8).ok is True
    j = grm.judge(leak, settle, 8)
    assert j.ok is False and j.baseline == 112 and j.worst == 128 and j.slope_per_reload == pytest.approx(4)
    assert grm.judge([1.0, None, 2.0, 3.0, 4.0], 2, 1).ok is None  # unavailable: not judged
    with pytest.raises(ValueError, match="raise --reloads"):
        grm.judge([1, 2, 3], 2, 1)


def test_nvidia_smi_compute_apps_are_read_by_pid() -> None:
    text = "4242, 1536\n777, 312\n4242, 64\n9, [N/A]\n"  # --format=csv,noheader,nounits; one pid on two GPUs
    assert grm.parse_compute_apps(text) == {4242: 1600.0, 777: 312.0}
    assert grm.parse_compute_apps("") == {}


def test_a_retired_runtime_and_its_session_are_garbage_once_closed(tmp_path: Path) -> None:
    """Closed is not enough: whatever still refers to a retired runtime (a list, a closure, a part) keeps its
    ONNX Runtime session -- on the GPU its CUDA arena and cuDNN workspace -- for good."""
    d, t = running(tmp_path)
    refs = []
    try:
        for i in range(1, 4):
            old = d.runtimes["disc-a"]
            refs.append((weakref.ref(old), weakref.ref(old.backend._session)))  # type: ignore[attr-defined]
            del old
            reload_and_wait(d, i)
            n = d.pipeline.stats.verdicts_total  # type: ignore[union-attr]
            # parts after the switch replace any stage's last reference to a part of the old runtime
            wait_until(lambda n=n: d.pipeline is not None and d.pipeline.stats.verdicts_total > n + 5, 30)
        wait_until(lambda: not d._retired, 30)
        for rt_ref, session_ref in refs:
            wait_until(lambda rt_ref=rt_ref, session_ref=session_ref:
                       gc.collect() >= 0 and rt_ref() is None and session_ref() is None, 30)
    finally:
        d.request_stop()
        t.join(60)
    assert d.exit_code == 0
