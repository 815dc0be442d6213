"""The command line as a technician meets it: every option says what it does (`--help`), and `report` writes its
plot beside the journal it read, not into whatever folder the command was typed in."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from inspectd.cli import build_parser, main
from tests.test_report import journal  # noqa: F401  (fixture)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_text() -> None:
    missing = []
    for name, p in _commands(build_parser()).items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help text: {missing}"


def test_report_png_goes_beside_the_journal(journal: Path, tmp_path: Path,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", "--journal", str(journal), "--since", "2026-11-24 08:00", "--until",
                 "2026-11-24 10:00", "--utc"]) == 0
    assert journal.with_name("report.png").stat().st_size > 1000
    assert os.listdir(elsewhere) == []
    journal.with_name("report.png").unlink()
    assert main(["report", "--journal", str(journal), "--since", "2026-11-24 08:00", "--no-png"]) == 0
    assert not journal.with_name("report.png").exists()
