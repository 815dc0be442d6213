"""Anomaly recipes without torch: schema, threshold and sensitivity, AUROC, and an anomalib-shaped graph
through the real daemon (ONNX Runtime, journal, archive) and `inspectd eval`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from itertools import product as pairs
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from inspectd.anomaly.calibrate import SENSITIVITIES, calibrate
from inspectd.anomaly.region import frame_region
from inspectd.config.load import load_config
from inspectd.config.schema import ProductConfig
from inspectd.decide import decide
from inspectd.engines.roc import auroc, roc_curve
from inspectd.errors import ConfigError
from inspectd.types import Findings, Frame, Outcome
from tests.conftest import ROOT
from tests.onnx_models import anomalib_model
from tests.test_run import journal_rows

SIZE = 64
MARKS = {"part_02.png": (8, 40), "part_05.png": (44, 12), "part_07.png": (30, 30), "part_10.png": (50, 50)}


def anomaly_recipe(model: Path, **over) -> dict:
    doc = {"name": "widget", "kind": "anomaly", "plc_id": 7,
           "model": {"path": str(model), "input": {"name": "input", "width": SIZE, "height": SIZE},
                     "scores_output": "pred_score", "activation": "none", "heatmap_output": "anomaly_map"},
           "preprocess": {"color": "rgb", "scale": 1 / 255, "mean": [0.0], "std": [1.0]},
           "classes": ["anomaly"], "rules": [{"name": "anomaly", "class": "anomaly", "min_score": 0.5,
                                              "result_code": 3}],
           "anomaly": {"format": "anomalib"}}
    doc.update(over)
    return doc


def parts_folder(folder: Path, n: int = 12) -> Path:
    """Mid-grey 64x64 Mono8 parts; four carry a white 5x5 mark at MARKS (x, y). labels.csv with kinds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        name = f"part_{i:02d}.png"
        img = (128 + rng.integers(-6, 7, (SIZE, SIZE))).astype(np.uint8)
        if name in MARKS:
            x, y = MARKS[name]
            img[y:y + 5, x:x + 5] = 255
        cv2.imwrite(str(folder / name), img)
        rows.append((name, "reject" if name in MARKS else "pass", "spot" if name in MARKS else "good"))
    with (folder / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "label", "kind"), *rows])
    return folder


def station(tmp_path: Path, model: Path, images: Path, recipe: dict | None = None) -> Path:
    (tmp_path / "products").mkdir(exist_ok=True)
    (tmp_path / "products" / "widget.yaml").write_text(yaml.safe_dump(recipe or anomaly_recipe(model)))
    st = {"name": "t", "cycle_budget_ms": 2000, "products_dir": "products", "product": "widget",
          "camera": {"type": "replay", "folder": str(images), "loop": False},
          "backend": {"type": "onnxruntime", "intra_op_threads": 1},
          "pipeline": {"max_in_flight": 1},
          "journal": {"path": str(tmp_path / "journal.sqlite")},
          "archive": {"path": str(tmp_path / "archive")}, "metrics": {"enabled": False},
          "log": {"every_part": False}}
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(st))
    return path


def run_daemon(st: Path, parts: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(st), "--max-parts",
                           str(parts)], capture_output=True, text=True, cwd=ROOT, timeout=120)


# -- recipes -----------------------------------------------------------------------------------------------
def test_thresholds_in_the_scores_own_units_only_for_anomaly_recipes(tmp_path: Path) -> None:
    model = anomalib_model(tmp_path / "a.onnx")
    images = parts_folder(tmp_path / "img")
    big = anomaly_recipe(model, rules=[{"name": "anomaly", "class": "anomaly", "min_score": 42.5}])
    cfg = load_config(station(tmp_path, model, images, big))
    assert cfg.products["widget"].rules[0].min_score == 42.5
    bad = {**big, "kind": "classifier", "anomaly": None, "classes": ["good", "anomaly"],
           "model": {**big["model"], "activation": "softmax"}}  # probabilities (activation none: raw logits)
    with pytest.raises(ConfigError) as e:
        load_config(station(tmp_path, model, images, bad))
    assert "rules[0].min_score: must be <= 1 for a classifier's probabilities (got 42.5)" in str(e.value)
    wrong = anomaly_recipe(model, classes=["good", "defect"])
    with pytest.raises(ConfigError) as e:
        load_config(station(tmp_path, model, images, wrong))
    assert "classes: kind: anomaly has one score: [anomaly]" in str(e.value)
    soft = anomaly_recipe(model)
    soft["model"]["activation"] = "softmax"
    with pytest.raises(ConfigError) as e:
        load_config(station(tmp_path, model, images, soft))
    assert "model.activation: an anomaly score is used in its own units: none" in str(e.value)


def test_sensitivity_rejects_what_the_calibration_table_says() -> None:
    """The recipe's false_rejects table is what decide() does at each sensitivity, on the same scores."""
    good = np.random.default_rng(5).gamma(20, 1.0, 600)
    c = calibrate(good)
    assert c.threshold == pytest.approx(1.05 * np.quantile(good, 0.995), rel=1e-5)
    for s in SENSITIVITIES:
        product = ProductConfig.model_validate({
            **anomaly_recipe(Path("m.onnx")), "rules": [{"name": "anomaly", "class": "anomaly",
                                                         "min_score": c.threshold}],
            "anomaly": {"sensitivity": s, "calibration": c.model_dump()}})
        rejected = [decide(Findings({"anomaly": float(v)}, "anomaly"), product).outcome is Outcome.REJECT
                    for v in good]
        assert np.mean(rejected) == pytest.approx(c.false_rejects[s], abs=1e-6), s
    assert c.false_rejects[0.8] == 0 and c.false_rejects[1.0] < 0.005  # quantile 0.995 + margin
    assert c.false_rejects[1.0] < c.false_rejects[1.25] < c.false_rejects[2.0] < 0.5  # never past the median


def test_auroc_is_the_pairwise_ranking_with_ties_counted_half() -> None:
    rng = np.random.default_rng(1)
    s = rng.integers(0, 8, 120).astype(float)  # many ties
    y = rng.random(120) < 0.4
    pos, neg = s[y], s[~y]
    brute = sum((p > n) + 0.5 * (p == n) for p, n in pairs(pos, neg)) / (len(pos) * len(neg))
    assert auroc(s, y) == pytest.approx(brute)
    fpr, tpr, _ = roc_curve(s, y)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(brute)  # the curve's area is the same number


def test_region_maps_back_through_roi_and_letterbox() -> None:
    product = ProductConfig.model_validate({
        **anomaly_recipe(Path("m.onnx")),
        "preprocess": {"roi": {"x": 100, "y": 50, "width": 200, "height": 100}, "resize": "letterbox",
                       "mean": [0.0], "std": [1.0]}})
    frame = Frame(np.zeros((400, 600), np.uint8), "Mono8", 0.0)
    # 200x100 ROI letterboxed into 64x64: scale 0.32, 64x32 image from input row 16
    assert frame_region((0.5, 0.25, 0.25, 0.5), product, frame) == (200, 50, 50, 100)
    assert frame_region(None, product, frame) is None


# -- anomalib-shaped graph through the daemon ---------------------------------------------------------------
def test_anomalib_export_runs_through_the_daemon(tmp_path: Path) -> None:
    images = parts_folder(tmp_path / "img")
    st = station(tmp_path, anomalib_model(tmp_path / "model.onnx"), images)
    r = run_daemon(st, 12)
    assert r.returncode == 0, r.stderr[-2000:]
    got = journal_rows(tmp_path / "journal.sqlite")
    assert len(got) == 12
    assert [row["verdict"] for row in got] == [row["truth"] for row in got]  # marks rejected, plain parts pass
    for row in got:
        reject = row["verdict"] == "reject"
        # pred_score as it is (0.5 = anomalib's boundary): a white mark is 1, noise of +-6 levels ~0.06
        assert row["score"] == 1.0 if reject else 0.0 <= row["score"] < 0.1
        assert json.loads(row["scores"]) == {"anomaly": pytest.approx(row["score"], abs=1e-6)}
        assert row["result_code"] == (3 if reject else 0)
        if reject:  # the journal keeps the region around the mark, in frame pixels, as the archive does
            x, y = MARKS[row["source_ref"]]
            rx, ry, rw, rh = json.loads(row["region"])
            assert rx <= x and ry <= y and x + 5 <= rx + rw and y + 5 <= ry + rh and rw * rh <= 64
    archived = sorted((tmp_path / "archive" / "widget").glob("*_reject.json"))
    assert len(archived) == 4 and len(list((tmp_path / "archive" / "widget").glob("*_reject.jpg"))) == 4
    regions = {tuple(json.loads(p.read_text())["region"]) for p in archived}
    assert len(regions) == 4  # one box per mark, each where its mark is
    for x, y in MARKS.values():  # the 5x5 mark inside its box, the box not much larger (bilinear edges)
        assert any(rx <= x and ry <= y and x + 5 <= rx + rw and y + 5 <= ry + rh and rw * rh <= 64
                   for rx, ry, rw, rh in regions), (x, y, regions)


def test_non_finite_anomaly_score_is_never_a_pass(tmp_path: Path) -> None:
    """A model that gives NaN on the warm-up frame is refused before READY (exit 3, no part inspected); one that
    gives +inf on some parts only gets fail-safes for those parts, never a pass."""
    images = parts_folder(tmp_path / "img")
    st = station(tmp_path, anomalib_model(tmp_path / "nan.onnx", poison="all"), images)
    r = run_daemon(st, 6)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "output 'pred_score' is nan: not a finite anomaly score" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr

    st = station(tmp_path, anomalib_model(tmp_path / "inf.onnx", poison="marked"), images)
    r = run_daemon(st, 12)
    assert r.returncode == 0, r.stderr[-2000:]
    got = journal_rows(tmp_path / "journal.sqlite")
    assert len(got) == 12
    for row in got:
        if Path(row["source_ref"] or "").name in MARKS or row["truth"] == "reject":
            assert row["verdict"] == "failsafe" and row["plc_ok"] == 0, dict(row)
            assert row["reason"] == "bad_output" and row["result_code"] == 1008, dict(row)
        else:
            assert row["verdict"] == "pass"
    assert sum(row["verdict"] == "failsafe" for row in got) == len(MARKS)


def test_eval_reports_auroc_recall_specificity(tmp_path: Path) -> None:
    images = parts_folder(tmp_path / "img")
    st = station(tmp_path, anomalib_model(tmp_path / "model.onnx"), images)
    out = tmp_path / "eval.json"
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "eval", "--product",
                        str(st.parent / "products" / "widget.yaml"), "--images", str(images), "--repeat", "1",
                        "--json", str(out), "--png", str(tmp_path / "eval.png"), "--errors", str(tmp_path / "errors")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    (res,) = json.loads(out.read_text())
    assert res["auroc"] == 1.0 and res["recall"] == 1.0 and res["specificity"] == 1.0 and res["accuracy"] == 1.0
    assert res["threshold"] == 0.5 and res["recall_by_kind"] == {"spot": {"rejected": 4, "parts": 4}}
    assert "recall by kind: spot 4/4" in r.stdout
    assert (tmp_path / "eval.png").stat().st_size > 10_000


# -- the committed demo anomaly recipe (fitted on good discs only; configs/demo-anomaly) -----------------------
DEMO_ANOMALY = ROOT / "configs" / "demo-anomaly"


def test_demo_anomaly_recipe_separates_fresh_discs(tmp_path: Path) -> None:
    """The shipped model on parts it never saw (a seed neither the bank nor the calibration used): AUROC and
    per-kind recall at the calibrated threshold, through `inspectd eval`."""
    from inspectd.camera.parts import make_part, random_kind

    folder = tmp_path / "fresh"
    folder.mkdir()
    rng = np.random.default_rng(4343)
    rows_ = []
    for i in range(90):
        kind = random_kind(rng, 0.5)
        image, _ = make_part(rng, 448, kind)
        cv2.imwrite(str(folder / f"p{i:03d}.png"), image)
        rows_.append((f"p{i:03d}.png", "reject" if kind else "pass", kind or "good"))
    with (folder / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "label", "kind"), *rows_])
    out = tmp_path / "eval.json"
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "eval", "--product",
                        str(DEMO_ANOMALY / "products" / "disc-anomaly.yaml"), "--images", str(folder),
                        "--repeat", "1", "--json", str(out), "--png", "", "--errors", str(tmp_path / "errors")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (res,) = json.loads(out.read_text())
    assert res["auroc"] >= 0.98, res
    assert res["specificity"] >= 0.95 and res["recall"] >= 0.9, res
    assert set(res["recall_by_kind"]) == {"scratch", "spot", "chip"}


def test_demo_anomaly_station_through_the_daemon(tmp_path: Path) -> None:
    """Synthetic discs through the real daemon with the anomaly recipe: verdicts follow the truth, the journal
    keeps score and region, rejects are archived with their overlay."""
    st = yaml.safe_load((DEMO_ANOMALY / "station.yaml").read_text())
    st.update({"products_dir": str(DEMO_ANOMALY / "products"), "cycle_budget_ms": 5000,
               "journal": {"path": str(tmp_path / "journal.sqlite")}, "archive": {"path": str(tmp_path / "ar")},
               "metrics": {"enabled": False}, "log": {"every_part": False}, "pipeline": {"max_in_flight": 1}})
    st["camera"].update({"seed": 99, "bank": 24, "defect_rate": 0.5, "rate_hz": 50})
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(st))
    r = run_daemon(path, 24)
    assert r.returncode == 0, r.stderr[-2000:]
    got = journal_rows(tmp_path / "journal.sqlite")
    assert len(got) == 24 and all(row["verdict"] in ("pass", "reject") for row in got)
    assert sum(row["verdict"] == row["truth"] for row in got) >= 22
    threshold = yaml.safe_load((DEMO_ANOMALY / "products" / "disc-anomaly.yaml").read_text())["rules"][0]
    for row in got:
        assert (row["score"] >= threshold["min_score"]) == (row["verdict"] == "reject")
        x, y, w, h = json.loads(row["region"])  # frame pixels of the 448x448 camera image
        assert 0 <= x < x + w <= 448 and 0 <= y < y + h <= 448
    assert len(list((tmp_path / "ar" / "disc-anomaly").glob("*_reject.jpg"))) == sum(
        row["verdict"] == "reject" for row in got)


def test_plc_result_carries_the_anomaly_score_in_its_own_units() -> None:
    """Block B's SCORE is a REAL: an anomaly score like 62.2 reaches the PLC as it is, not clipped to 0..1."""
    from inspectd.plc.layout import Layout, VisionOutputs

    layout = Layout()
    back = layout.decode_b(layout.encode_b(VisionOutputs(score=62.219, result_code=1)))
    assert back.score == pytest.approx(62.219, rel=1e-6)
