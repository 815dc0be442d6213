"""`inspectd bench --json` writes exactly one JSON document to stdout; logs and progress go to stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
