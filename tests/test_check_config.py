"""`inspectd check-config` knows what `run` would refuse: one planted mistake per case, each reported as
`file:line: key: message` with exit 2 and no traceback; several mistakes in several files come in one pass.

`python tools/check_config_table.py` prints the same cases as the README's table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from inspectd.cli import main
from tests.conftest import write_station
from tests.onnx_models import odd_output_model


@dataclass(frozen=True)
class Case:
    name: str
    plant: Callable[[Path], None]  # breaks the station folder written by write_station
    file: str  # station.yaml | products/disc-a.yaml
    key: str
    message: str  # a fragment of the message


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1))


def _set(path: Path, **changes: object) -> None:
    """Set keys of a YAML file; `a__b=v` sets a.b."""
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _product(folder: Path, **changes: object) -> None:
    _set(folder / "products" / "disc-a.yaml", **changes)


def _station(folder: Path, **changes: object) -> None:
    _set(folder / "station.yaml", **changes)


def _second_product(folder: Path) -> None:
    src = (folder / "products" / "disc-a.yaml").read_text()
    (folder / "products" / "disc-b.yaml").write_text(src.replace("name: disc-a", "name: disc-b"))


def _golden_wrong(folder: Path) -> None:
    import cv2
    import numpy as np

    cv2.imwrite(str(folder / "products" / "black.png"), np.zeros((448, 448), np.uint8))
    _product(folder, golden=[{"image": "black.png", "expect": "reject"}])


def _nan_model(folder: Path) -> None:
    _product(folder, model__path=str(odd_output_model(folder / "nan.onnx", "nan")), model__heatmap_output=None)


CASES = [
    Case("model input size the model does not take", lambda f: _product(f, model__input={
        "name": "input", "width": 200, "height": 224, "channels": 3, "dtype": "float32"}),
        "products/disc-a.yaml", "model.path", "recipe says 200"),
    Case("ROI outside the frame", lambda f: _product(f, preprocess__roi={"x": 400, "y": 0, "width": 100,
                                                                          "height": 448}),
         "products/disc-a.yaml", "preprocess.roi", "not inside the camera's 448x448 frame"),
    Case("3 classes for a 2-class model", lambda f: _product(f, classes=["good", "defect", "dent"]),
         "products/disc-a.yaml", "model.path", "2 classes, recipe lists 3"),
    Case("duplicate key", lambda f: _edit(f / "station.yaml", "cycle_budget_ms: 50", "cycle_budget_ms: 50\n"
                                                                                     "cycle_budget_ms: 5"),
         "station.yaml", "cycle_budget_ms", "duplicate key (first given on line"),
    Case("Latin-1 byte", lambda f: (f / "station.yaml").write_bytes(
        (f / "station.yaml").read_bytes().replace(b"name: demo", b"name: d\xe9mo")),
         "station.yaml", "", "UTF-8"),
    Case("duplicated camera: block", lambda f: _edit(f / "station.yaml", "camera:", "camera:\n  type: synthetic\n"
                                                                                  "camera:"),
         "station.yaml", "camera", "duplicate key (first given on line"),
    Case("misspelt station key", lambda f: _edit(f / "station.yaml", "cycle_budget_ms:", "cycle_budgt_ms:"),
         "station.yaml", "cycle_budgt_ms", "did you mean 'cycle_budget_ms'"),
    Case("misspelt key in a plugin section", lambda f: _edit(f / "station.yaml", "intra_op_threads:",
                                                             "intra_op_thread:"),
         "station.yaml", "backend.intra_op_thread", "did you mean 'intra_op_threads'"),
    Case("misspelt product key", lambda f: _edit(f / "products" / "disc-a.yaml", "failsafe:", "failsave:"),
         "products/disc-a.yaml", "failsave", "did you mean 'failsafe'"),
    Case("model file missing", lambda f: _product(f, model__path="missing.onnx"),
         "products/disc-a.yaml", "model.path", "file not found"),
    Case("replay folder missing", lambda f: _station(f, camera={"type": "replay", "folder": "no-such-folder"}),
         "station.yaml", "camera.folder", "folder not found"),
    Case("threshold outside a classifier's probabilities", lambda f: _product(
        f, rules=[{"name": "defect", "class": "defect", "min_score": 2, "result_code": 1}]),
         "products/disc-a.yaml", "rules[0].min_score", "must be <= 1"),
    Case("two products share a plc_id", _second_product, "products/disc-b.yaml", "plc_id", "also used by"),
    Case("active product does not exist", lambda f: _station(f, product="disc-z"),
         "station.yaml", "product", "no product 'disc-z'"),
    Case("model gives NaN", _nan_model, "products/disc-a.yaml", "model.path", "non-finite"),
    Case("golden image gets the wrong verdict", _golden_wrong, "products/disc-a.yaml", "golden", "black.png"),
    Case("journal folder not writable", lambda f: _station(f, journal={"path": "/etc/hostname/journal.sqlite"}),
         "station.yaml", "journal.path", "cannot write under"),
    Case("unknown backend type", lambda f: _station(f, backend={"type": "openvino"}),
         "station.yaml", "backend.type", "must be one of"),
    Case("YAML syntax error", lambda f: _edit(f / "products" / "disc-a.yaml", "classes:", "classes: [good"),
         "products/disc-a.yaml", "", "YAML syntax"),
]


def run_check(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check-config", "--config", str(folder / "station.yaml")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.splitlines()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_planted_mistake(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_station(tmp_path, {"camera": {"bank": 4}})
    case.plant(tmp_path)
    code, lines = run_check(tmp_path, capsys)
    assert code == 2, lines
    where = re.escape(str(tmp_path / case.file)) + r":\d+:"
    hits = [line for line in lines if re.match(where, line) and case.message in line
            and (not case.key or f": {case.key}:" in line)]
    assert hits, f"expected {case.file}:LINE: {case.key}: ...{case.message}... in:\n" + "\n".join(lines)


def test_the_demo_station_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parent.parent
    assert main(["check-config", str(root / "configs/demo/station.yaml")]) == 0
    assert ": ok (1 products: disc-a)" in capsys.readouterr().out


def test_every_problem_of_every_file_in_one_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_station(tmp_path, {"camera": {"bank": 4}})
    _edit(tmp_path / "station.yaml", "cycle_budget_ms:", "cycle_budgt_ms:")  # schema, station
    _product(tmp_path, classes=["good", "defect", "dent"],  # model, product
             preprocess__roi={"x": 400, "y": 0, "width": 100, "height": 448})  # ROI, product
    _second_product(tmp_path)
    _edit(tmp_path / "products" / "disc-b.yaml", "failsafe:", "failsave:")  # schema, second product
    code, lines = run_check(tmp_path, capsys)
    assert code == 2
    text = "\n".join(lines)
    for fragment in ("cycle_budgt_ms", "failsave", "recipe lists 3", "not inside the camera"):
        assert fragment in text, text
