#!/usr/bin/env python3
"""The check-config table: each planted mistake of tests/test_check_config.py in a fresh demo station folder,
what `inspectd check-config` prints for it and its exit code (a Markdown table for the README).

    python tools/check_config_table.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspectd.cli import main  # noqa: E402
from tests.conftest import write_station  # noqa: E402
from tests.test_check_config import CASES  # noqa: E402


def main_table() -> int:
    print("| planted mistake | check-config says (file:line: key: message) | exit |")
    print("|---|---|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_station(folder, {"camera": {"bank": 4}})
            case.plant(folder)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["check-config", "--config", str(folder / "station.yaml")])
            lines = [ln.replace(str(folder) + "/", "") for ln in err.getvalue().splitlines()
                     if case.message in ln]
            shown = (lines[0] if lines else "(not reported)").replace("|", "\\|")
            if len(shown) > 160:
                shown = shown[:157] + "..."
            print(f"| {case.name} | `{shown}` | {code} |")
    return 0


if __name__ == "__main__":
    sys.exit(main_table())
