"""`inspectd bench --json` writes exactly one JSON document to stdout; logs and progress go to stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inspectd.bench import breakdown
from tests.conftest import write_station


def test_bench_json_is_one_document_even_with_warnings(tmp_path: Path) -> None:
    # A 1 ms budget makes parts miss their deadline: each miss logs a warning while the bench runs.
    station = write_station(tmp_path, {"cycle_budget_ms": 1, "camera": {"bank": 4}})
    p = subprocess.run([sys.executable, "-m", "inspectd.cli", "bench", "--config", str(station), "--parts", "60",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)  # raises if anything else is on stdout
    assert report["parts"] == 60
    assert report["backend"]["providers"] == "cpu"
    assert len(report["first_parts_e2e_ms"]) == 5
    assert "bench:" in p.stderr  # progress went to stderr
    if report["failsafes"]:
        assert "deadline_missed" in p.stderr  # the warnings went there too


def test_bench_reports_the_pipelines_own_overhead(tmp_path: Path) -> None:
    """overhead_ms (e2e minus each part's own stage times) and process CPU per part: the figures that compare
    pipeline changes (tools/bench_overhead.py runs them side by side)."""
    station = write_station(tmp_path, {"camera": {"bank": 4}})
    p = subprocess.run([sys.executable, "-m", "inspectd.cli", "bench", "--config", str(station), "--parts", "60",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)
    over = report["overhead_ms"]
    assert 0 <= over["p50"] <= over["p99"] < report["e2e_ms"]["max"]
    assert report["cpu_ms_per_part"] > 0
    b = report["overhead_breakdown_ms"]
    assert {"grab->preprocess", "preprocess->infer", "infer->decide"} <= set(b)
    slowest = max(report["stages"], key=lambda s: report["stages"][s]["p50"])
    assert b[f"{slowest}_idle_starved"]["mean"] >= 0 and b[f"{slowest}_idle_handoff"]["mean"] >= 0


def test_breakdown_splits_the_slowest_stages_idle_time() -> None:
    """Part 2 reaches infer 0.3 ms after part 1 left it (starved 0.3 ms), and infer starts it 0.1 ms later (hand-off);
    part 3 was waiting when part 2 left (starved 0), infer started it 0.05 ms later."""
    ms = 1e-3

    def part(pre_end: float, inf: tuple[float, float]) -> dict[str, tuple[float, float]]:
        return {"grab": (0.0, 0.0), "preprocess": (0.0, pre_end * ms), "infer": (inf[0] * ms, inf[1] * ms),
                "decide": (inf[1] * ms + 0.02 * ms, inf[1] * ms + 0.05 * ms)}

    times = [part(0.1, (0.2, 1.0)), part(1.3, (1.4, 2.2)), part(1.9, (2.25, 3.0))]
    b = breakdown(times, "infer")
    assert b["infer_idle_starved"]["mean"] == pytest.approx(0.15)  # (0.3 + 0) / 2
    assert b["infer_idle_handoff"]["mean"] == pytest.approx(0.075)  # (0.1 + 0.05) / 2
    assert b["preprocess->infer"]["p50"] == pytest.approx(0.1)
    assert b["infer->decide"]["mean"] == pytest.approx(0.02)


def test_bench_overhead_tool_compares_checkouts(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, str(root / "tools/bench_overhead.py"), "--trees", str(root),
                        "--rounds", "1", "--parts", "60", "--infer-us", "0", "--json", str(tmp_path / "o.json")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "median over rounds:" in p.stdout
    runs = json.loads((tmp_path / "o.json").read_text())
    [(tree, rounds)] = runs.items()
    assert tree == str(root) and len(rounds) == 1
    assert rounds[0]["eff"] > 0 and rounds[0]["over_p50"] >= 0 and rounds[0]["cpu_part"] > 0
    assert rounds[0]["idle_starv"] >= 0 and rounds[0]["idle_hand"] >= 0


def test_bench_with_the_daemons_outputs(tmp_path: Path) -> None:
    """--outputs feeds the daemon's journal (ahead log included), metrics and verdict log lines: their cost is in
    the figures; the verdict lines go to /dev/null, stdout still carries the report alone."""
    station = write_station(tmp_path, {"camera": {"bank": 4}})
    cmd = [sys.executable, "-m", "inspectd.cli", "bench", "--config", str(station), "--parts", "60", "--json"]
    p = subprocess.run([*cmd, "--outputs", "journal,metrics,log"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)
    assert report["outputs"] == ["journal", "metrics", "log"] and report["parts"] == 60
    assert '"event": "verdict"' not in p.stdout + p.stderr
    bad = subprocess.run([*cmd, "--outputs", "journal,plc"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown plc (choose from journal, metrics, log)" in bad.stderr


def test_bench_pause_times_the_first_part_after_each_pause_with_and_without_keep_warm(tmp_path: Path) -> None:
    """--pause S: the first part after each of --pause-repeats pauses, on one pipeline per keep-warm setting; its
    e2e and stage times against the steady parts just before the pause, and how many dummy inferences keep-warm
    (every S/4) ran meanwhile: none when off."""
    station = write_station(tmp_path, {"camera": {"bank": 4}})
    p = subprocess.run([sys.executable, "-m", "inspectd.cli", "bench", "--config", str(station), "--parts", "30",
                        "--json", "--pause", "0.6", "--pause-repeats", "2"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    after = json.loads(p.stdout)["after_pause_ms"]
    assert after["pause_s"] == 0.6 and after["keep_warm_s"] == 0.15
    assert after["keep_warm_off"]["keep_warm_runs"] == 0
    assert after["keep_warm_on"]["keep_warm_runs"] >= 2  # each 0.6 s pause holds one (idle stages poll at 0.1 s)
    for mode in ("keep_warm_off", "keep_warm_on"):
        parts = after[mode]["parts"]
        assert [x["pause_s"] for x in parts] == [0.6, 0.6]
        for x in parts:
            assert x["outcome"] in ("pass", "reject")  # judged, not a fail-safe
            assert x["e2e_ms"] >= x["infer_ms"] + x["preprocess_ms"] > 0
            assert x["steady_e2e_ms"] >= x["steady_infer_ms"] > 0
