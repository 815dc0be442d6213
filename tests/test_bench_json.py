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
