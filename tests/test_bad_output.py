"""Model outputs no verdict can rest on (NaN, inf, wrong size) give the fail-safe `bad_output` (RESULT_CODE 1008),
counted, never a pass; a model that gives them on the self-check's input or a golden image never goes live."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.decide import FAILSAFE_CODES, decide, failsafe, make_verdict
from inspectd.errors import ExitCode, ModelError
from inspectd.pipeline.runtime import build_runtime
from inspectd.postprocess import BadOutput, Postprocessor
from inspectd.types import Findings, Outcome, Part, Reason, Trigger
from tests.conftest import ROOT, write_station
from tests.onnx_models import brightness_model, odd_output_model
from tests.test_metrics import get, samples


@pytest.fixture
def product(tmp_path: Path):
    return load_config(write_station(tmp_path, model=brightness_model(tmp_path / "b.onnx"))).products["disc-a"]


def test_bad_output_has_its_own_result_code() -> None:
    assert Reason.BAD_OUTPUT.value == "bad_output" and FAILSAFE_CODES[Reason.BAD_OUTPUT] == 1008


@pytest.mark.parametrize("logits, match", [
    (np.array([[0.0, np.nan]], np.float32), "1 non-finite of 2 values \\(nan=1, inf=0\\)"),
    (np.array([[np.inf, 0.0]], np.float32), "inf=1"),
    (np.array([[-np.inf, -np.inf]], np.float32), "inf=2"),
    (np.array([[0.0, 1e300]], np.float64), "inf=1"),  # beyond float32: not silently clipped
    (np.zeros((1, 3), np.float32), "3 values for 2 classes"),
    (np.zeros((1, 1), np.float32), "1 values for 2 classes"),
])
def test_postprocess_refuses_outputs_no_verdict_can_rest_on(product, logits, match) -> None:
    post = Postprocessor(product)
    with pytest.raises(BadOutput, match=match):
        post({"logits": logits, "heatmap": np.zeros((1, 1, 28, 28), np.float32)})


def test_postprocess_refuses_a_missing_output_and_a_non_finite_heatmap(product) -> None:
    post = Postprocessor(product)
    with pytest.raises(BadOutput, match="no output 'logits'"):
        post({"heatmap": np.zeros((1, 1, 28, 28), np.float32)})
    heat = np.zeros((1, 1, 28, 28), np.float32)
    heat[0, 0, 3, 4] = np.nan
    with pytest.raises(BadOutput, match="output 'heatmap'"):
        post({"logits": np.zeros((1, 2), np.float32), "heatmap": heat})
    ok = post({"logits": np.array([[0.0, -1e4]], np.float32)})  # extreme but finite: a real verdict
    assert decide(ok, product).outcome is Outcome.PASS


@pytest.mark.parametrize("defect", [math.nan, math.inf, -math.inf, None])
def test_decide_never_passes_on_a_missing_or_non_finite_score(product, defect) -> None:
    # Defence in depth: decide() refuses even when handed findings that bypassed the postprocessor.
    scores = {"good": 0.5} if defect is None else {"good": 0.5, "defect": defect}
    d = decide(Findings(scores=scores, top_class="good"), product)
    assert (d.outcome, d.reason, d.result_code) == (Outcome.FAILSAFE, "bad_output", 1008)
    assert d.score == 0.0  # a finite number the journal and the PLC's REAL can hold


def test_bad_output_is_never_told_ok_even_when_the_recipe_says_failsafe_pass(tmp_path: Path) -> None:
    st = write_station(tmp_path, product={"failsafe": "pass"}, model=brightness_model(tmp_path / "b.onnx"))
    cfg = load_config(st)
    product = cfg.products["disc-a"]
    part = Part(1, Trigger(1, time.monotonic()), "disc-a", deadline=time.monotonic() + 1)
    bad = decide(Findings(scores={"good": 0.5, "defect": math.nan}, top_class="good"), product)
    assert make_verdict(part, bad, product, "sha").plc_ok is False
    late = failsafe(Reason.DEADLINE)  # no verdict in time: the recipe's policy applies
    assert make_verdict(part, late, product, "sha").plc_ok is True


@pytest.mark.parametrize("kind, match", [
    ("nan", "output 'logits' has 1 non-finite of 2 values \\(nan=1"),
    ("inf", "inf=1"),
    ("wide", "output 'logits' has 3 values for 2 classes"),
])
def test_self_check_refuses_the_model_before_it_judges_a_part(tmp_path: Path, kind: str, match: str) -> None:
    model = odd_output_model(tmp_path / f"{kind}.onnx", kind)
    cfg = load_config(write_station(tmp_path, model=model))
    with pytest.raises(ModelError, match=match) as e:
        build_runtime(cfg.station, cfg.products["disc-a"])
    assert str(e.value).startswith(f"product 'disc-a': model {kind}.onnx: self-check on an all-zero input: ")


def replay_folder(folder: Path, levels: list[int]) -> Path:
    """Grey 448x448 images named NN_dark/NN_bright in replay order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(levels):
        cv2.imwrite(str(folder / f"{i:02d}_{'bright' if level > 128 else 'dark'}.png"),
                    np.full((448, 448), level, np.uint8))
    return folder


def _nan_station(tmp_path: Path, **station) -> Path:
    """nan_when_bright passes the self-check (all-zero input) and the warm-up (the first, dark image) and answers
    NaN for every bright image; dark ones pass. The recipe says `failsafe: pass`: bad outputs must still be NG."""
    images = replay_folder(tmp_path / "images", [20, 235, 40, 220])
    over = {"camera": {"type": "replay", "folder": str(images), "rate_hz": 100, "loop": True},
            "pipeline": {"max_in_flight": 2},
            "cycle_budget_ms": 500, "archive": {"enabled": False}, **station}
    return write_station(tmp_path, over, {"failsafe": "pass"},
                         model=odd_output_model(tmp_path / "nan_when_bright.onnx", "nan_when_bright"))


def _expected(source_ref: str) -> tuple:
    return ("failsafe", "bad_output", 1008, 0) if "bright" in source_ref else ("pass", "", 0, 1)


def test_a_nan_model_fails_safe_its_nan_parts_counted_in_metrics(tmp_path: Path) -> None:
    n = 20
    d = Daemon(load_config(_nan_station(tmp_path, metrics={"enabled": True, "port": 0})),
               Options(handle_signals=False, max_parts=n))
    try:
        d.start()
        end = time.monotonic() + 60
        while (d.journal is None or d.journal.written < n) and time.monotonic() < end:
            time.sleep(0.05)
        assert d.metrics is not None and d.metrics.server is not None
        s = samples(get(f"http://127.0.0.1:{d.metrics.server.port}/metrics")[1].decode())
    finally:
        d.shutdown()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = db.execute("SELECT source_ref, verdict, reason, result_code, plc_ok, score FROM verdicts").fetchall()
    assert len(rows) == n
    assert [r[1:5] for r in rows] == [_expected(r[0]) for r in rows]  # NaN parts fail safe, NG; the others pass
    assert all(r[5] == 0.0 for r in rows if r[1] == "failsafe")  # a finite number where the model gave none
    bad = sum(r[2] == "bad_output" for r in rows)
    assert bad == n // 2
    assert s[("inspectd_failsafes_total", (("reason", "bad_output"),))] == bad
    assert s[("inspectd_parts_total", (("product", "disc-a"), ("verdict", "failsafe")))] == bad
    assert s[("inspectd_parts_total", (("product", "disc-a"), ("verdict", "pass")))] == n - bad


def test_run_max_parts_with_a_nan_model_exits_with_every_part_journaled(tmp_path: Path) -> None:
    """The issue's case: a NaN model passed every part and `run --max-parts` never exited."""
    n = 40
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(_nan_station(tmp_path)),
                        "--max-parts", str(n)], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = db.execute("SELECT seq, source_ref, verdict, reason, result_code, plc_ok FROM verdicts "
                          "ORDER BY seq").fetchall()
    assert [row[0] for row in rows] == list(range(1, n + 1))
    assert [row[2:] for row in rows] == [_expected(row[1]) for row in rows]
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    logged = [e for e in events if e.get("event") == "bad_output"]
    assert 1 <= len(logged) <= 6  # the 1st, 2nd, 4th, ... 16th of 20: logged, not flooded
    assert logged[0]["product"] == "disc-a" and "non-finite" in logged[0]["problem"]
    stopped = next(e for e in events if e.get("event") == "stopped")
    assert stopped["parts_in"] == stopped["verdicts"] == stopped["journaled"] == n


def _refused_start(st: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`inspectd run` on `st`, which must refuse to start with the model exit code (3): the run and its one
    `cannot_start` event."""
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(st)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == ExitCode.MODEL == 3, r.stderr[-2000:]
    [event] = [json.loads(line) for line in r.stdout.splitlines() if '"cannot_start"' in line]
    return r, event


def test_start_refuses_a_nan_model_with_the_model_exit_code(tmp_path: Path) -> None:
    st = write_station(tmp_path, {"camera": {"bank": 4}}, model=odd_output_model(tmp_path / "nan.onnx", "nan"))
    r, event = _refused_start(st)
    assert event["error"].startswith("product 'disc-a': model nan.onnx: self-check on an all-zero input: output "
                                     "'logits' has 1 non-finite of 2 values")
    assert '"ready"' not in r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "journal.sqlite").exists()  # refused before the line was served a single part


def test_golden_image_answered_with_nan_is_a_model_error(tmp_path: Path) -> None:
    """The all-zero input is fine for nan_when_bright; the golden gate's bright image is not: refused as a model
    error by the one golden gate, with the image named."""
    replay_folder(tmp_path / "products" / "golden", [235])
    st = write_station(tmp_path, {"camera": {"bank": 4}},
                       {"golden": [{"image": "golden/00_bright.png", "expect": "reject"}]},
                       model=odd_output_model(tmp_path / "nan_when_bright.onnx", "nan_when_bright"))
    _, event = _refused_start(st)
    assert event["error"].startswith("product 'disc-a': model nan_when_bright.onnx: golden image 00_bright.png: "
                                     "output 'logits' has 1 non-finite")


def test_warm_up_frame_answered_with_nan_is_a_model_error(tmp_path: Path) -> None:
    """The camera's first frame (warm-up before READY) is bright: refused before READY, exit 3."""
    images = replay_folder(tmp_path / "images", [235, 20])
    st = write_station(tmp_path, {"camera": {"type": "replay", "folder": str(images), "loop": True}},
                       model=odd_output_model(tmp_path / "nan_when_bright.onnx", "nan_when_bright"))
    r, event = _refused_start(st)
    assert event["error"].startswith("product 'disc-a': model nan_when_bright.onnx: warm-up on a camera frame: "
                                     "output 'logits' has 1 non-finite")
    assert '"ready"' not in r.stdout
