"""The engine commands end to end on a fitted model and labelled parts: quantize -> eval -> compare."""

from __future__ import annotations

import argparse
import json

import pytest

from inspectd.engines.cli import add_engine_parsers
from tests.engine_fixtures import parts_dataset


def _run(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="inspectd")
    add_engine_parsers(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return parts_dataset(tmp_path_factory.mktemp("cli"), train=160, calib=32, test=80)


def test_quantize_then_eval_then_compare(data, tmp_path, capsys):
    product, model = str(data["product"]), data["model"]
    assert _run("quantize", "--product", product, "--calib", str(data["calib"]), "--method", "percentile") == 0
    int8 = model.with_name("parts.int8.onnx")
    assert int8.is_file() and "percentile calibration on 32 image(s)" in capsys.readouterr().out

    png, js = tmp_path / "eval.png", tmp_path / "eval.json"
    assert _run("eval", "--product", product, "--images", str(data["test"]), "--repeat", "1",
                "--png", str(png), "--json", str(js), "--errors", str(tmp_path / "errors")) == 0
    out = capsys.readouterr().out
    rows = json.loads(js.read_text())
    assert [(r["model"], r["precision"]) for r in rows] == [("parts.onnx", "fp32"), ("parts.int8.onnx", "int8")]
    assert all(r["images"] == 80 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert "parts.int8.onnx" in out and png.stat().st_size > 10_000

    assert _run("compare", "--product", product, "--images", str(data["test"]), "--a", str(model),
                "--b", str(int8)) == 0
    out = capsys.readouterr().out
    assert "verdict agreement:" in out and "logits" in out
    # a strict agreement threshold turns disagreement into a failing exit status for scripts
    assert _run("compare", "--product", product, "--images", str(data["test"]), "--a", str(model),
                "--b", str(int8), "--min-agreement", "1.01") == 1
