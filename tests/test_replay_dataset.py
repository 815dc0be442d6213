"""A real dataset through the replay camera: ImageFolder layout or a configurable labels file, class-level truth,
errors with file:line for unknown labels, 16-bit files refused in an 8-bit replay, and a daemon run over a folder
that is paced (no overflow), ties every journal row to its file and stops with a summary at the folder's end."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd.camera.config import LabelsConfig, ReplayConfig
from inspectd.camera.replay import ReplaySource, dataset, read_image
from inspectd.errors import ConfigError
from tests.conftest import ROOT, write_station


def _img(path: Path, level: int = 20, dtype=np.uint8, size: int = 448) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size), level, dtype))
    return path


def test_imagefolder_layout_gives_truth_class_and_relative_path(tmp_path: Path) -> None:
    for rel in ("good/a.png", "good/b.png", "defect/scratch/a.png", "defect/dent/c.png", "NG/d.png"):
        _img(tmp_path / rel)
    got = {it.rel: (it.truth, it.cls) for it in dataset(tmp_path)}
    assert got == {"good/a.png": ("pass", "good"), "good/b.png": ("pass", "good"),
                   "defect/scratch/a.png": ("reject", "scratch"), "defect/dent/c.png": ("reject", "dent"),
                   "NG/d.png": ("reject", "NG")}
    src = ReplaySource(ReplayConfig(type="replay", folder=tmp_path))
    src.open()
    frames = [src.grab(1.0) for _ in range(5)]
    # same file name in two folders: the frame (and the journal's source_ref) still says which one
    assert [f.meta["file"] for f in frames if f] == sorted(got)
    assert {f.meta["file"]: f.meta["class"] for f in frames if f}["defect/scratch/a.png"] == "scratch"


def test_unknown_folder_name_is_an_error_not_missing_truth(tmp_path: Path) -> None:
    _img(tmp_path / "good" / "a.png")
    _img(tmp_path / "maybe" / "b.png")
    with pytest.raises(ConfigError, match=r"maybe: folder name 'maybe' is no known label"):
        dataset(tmp_path)
    # named in the config, the class folder is a reject class
    items = dataset(tmp_path, LabelsConfig(reject_labels=["maybe"]))
    assert [(it.rel, it.truth, it.cls) for it in items] == [("good/a.png", "pass", "good"),
                                                            ("maybe/b.png", "reject", "maybe")]


def test_labels_file_with_own_columns_delimiter_and_label_names(tmp_path: Path) -> None:
    for name in ("p1.png", "p2.png", "p3.png"):
        _img(tmp_path / "img" / name)
    (tmp_path / "img" / "truth.txt").write_text("id;kind;verdict\np1.png;none;OK\np2.png;scratch;NG\n"
                                                "img/p3.png;;ng\n")
    cfg = LabelsConfig(file="truth.txt", delimiter=";", file_column="id", label_column="verdict",
                       class_column="kind", pass_labels=["OK"], reject_labels=["NG"])
    got = {it.rel: (it.truth, it.cls) for it in dataset(tmp_path / "img", cfg)}
    # p3's path does not match (img/ prefix): unlabelled, as an image the file does not list
    assert got == {"p1.png": ("pass", "none"), "p2.png": ("reject", "scratch"), "p3.png": (None, None)}
    # indices instead of names, no header
    (tmp_path / "img" / "truth.txt").write_text("p1.png\tGood\np2.png\tDefect\n")
    cfg = LabelsConfig(file="truth.txt", delimiter="\t", file_column=0, label_column=1)
    assert [(it.truth, it.cls) for it in dataset(tmp_path / "img", cfg)][:2] == [("pass", "Good"),
                                                                                  ("reject", "Defect")]


def test_unknown_label_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("file,label\na.png,pass\nb.png,Reject?\n")
    with pytest.raises(ConfigError, match=r"labels\.csv:3: unknown label 'Reject\?'"):
        dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.png,PASS\nb.png,Reject\n")  # case does not matter
    assert [it.truth for it in dataset(tmp_path)] == ["pass", "reject"]
    (tmp_path / "labels.csv").write_text("name,label\na.png,pass\n")
    with pytest.raises(ConfigError, match=r"labels\.csv:1: labels\.file_column: no column 'file'"):
        dataset(tmp_path)


def test_dataset_problems_are_config_errors_for_check_config_and_run(tmp_path: Path) -> None:
    """An unknown label is a recipe problem: check-config lists it with file:line, run exits 2 (which systemd does
    not restart forever), never a traceback or the camera's exit 71."""
    _img(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "labels.csv").write_text("file,label\na.png,Reject?\n")
    st = write_station(tmp_path, {"camera": {"type": "replay", "folder": str(tmp_path / "images")}})
    for cmd in (["check-config", "--config", str(st)], ["run", "--config", str(st)]):
        r = subprocess.run([sys.executable, "-m", "inspectd.cli", *cmd], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
        assert r.returncode == 2, (cmd, r.stdout[-1500:], r.stderr[-1500:])
        assert "labels.csv:2: unknown label 'Reject?'" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_16_bit_png_is_refused_in_an_8_bit_replay(tmp_path: Path) -> None:
    path = _img(tmp_path / "deep.png", level=663, dtype=np.uint16, size=16)
    with pytest.raises(ConfigError, match=r"deep\.png: 16-bit image in a Mono8 replay"):
        read_image(path, "Mono8")
    with pytest.raises(ConfigError, match="16-bit image in a Mono8 replay"):
        ReplaySource(ReplayConfig(type="replay", folder=tmp_path)).open()
    img = read_image(path, "Mono16")
    assert img.dtype == np.uint16 and int(img.max()) == 663


def test_replay_run_is_paced_journals_each_file_and_stops_at_the_end(tmp_path: Path) -> None:
    """As fast as asked (no rate_hz) with a one-deep queue: every image is admitted when the pipeline can take
    it, so none is an overflow fail-safe; the run ends by itself with exit 0 once the last has its row."""
    names = [f"good/{i:02d}.png" for i in range(10)] + [f"defect/spot/{i:02d}.png" for i in range(10)]
    for i, rel in enumerate(names):
        _img(tmp_path / "images" / rel, level=20 + i)
    _img(tmp_path / "images" / "zz.png", level=90)  # labelled by the station's own labels file
    (tmp_path / "images" / "truth.txt").write_text("zz.png;NG\n")
    names.append("zz.png")
    labels = {"file": "truth.txt", "delimiter": ";", "file_column": 0, "label_column": 1}
    st = write_station(tmp_path, {"camera": {"type": "replay", "folder": str(tmp_path / "images"), "labels": labels},
                                  "pipeline": {"queue_depth": 1, "overflow": "failsafe_newest"},
                                  "cycle_budget_ms": 2000})
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "run", "--config", str(st)],
                       capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    [done] = [json.loads(line) for line in r.stdout.splitlines() if '"replay_finished"' in line]
    assert done["parts"] == 21 and done["overflows"] == 0 and done["failsafe"] == 0
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = db.execute("SELECT source_ref, truth, verdict, reason FROM verdicts ORDER BY seq").fetchall()
    assert [row[0] for row in rows] == sorted(names)  # each row names its file, once, in replay order
    assert [row[1] for row in rows] == ["reject"] * 10 + ["pass"] * 10 + ["reject"]  # defect/ sorts first
    assert not [row for row in rows if row[2] == "failsafe"]


def test_bench_on_a_small_non_looping_folder_finishes(tmp_path: Path) -> None:
    """Six images, loop false (the default), 10 parts plus the 50-part warm-up: the bench loops the folder for
    its own run instead of waiting 600 s for parts that never come, then tripping over a missing frame."""
    for i in range(6):
        _img(tmp_path / "images" / "good" / f"{i}.png", level=20 + 10 * i)
    st = write_station(tmp_path, {"camera": {"type": "replay", "folder": str(tmp_path / "images")}})
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "bench", "--config", str(st), "--parts", "10",
                        "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["parts"] == 10 and report["naive_fps"] > 0
