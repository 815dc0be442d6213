"""The offline tools an ML engineer uses on a real model: quantize on a fixed-batch model with the default options,
its INT8-vs-FP32 check (agreement, speed, warnings), compare's count of the differences it does not list, and the
files the tools write being readable by the service's own user (0644)."""

from __future__ import annotations

import os
import stat

import onnx
import pytest

from inspectd.engines.compare import CompareReport, SpeedCheck, model_batch
from inspectd.engines.manifest import atomic_write
from inspectd.errors import ExitCode, ModelError
from tests.engine_fixtures import parts_dataset, write_product
from tests.test_engine_cli import _run  # the engine subcommands parsed as inspectd parses them


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return parts_dataset(tmp_path_factory.mktemp("tools"), train=120, calib=20, test=20)


def test_quantize_reads_the_batch_from_a_fixed_batch_model_and_checks_int8(data, tmp_path, capsys) -> None:
    m = onnx.load(str(data["model"]))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # an export with batch 1 baked in
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(m, str(fixed))
    assert model_batch(fixed) == 1 and model_batch(data["model"]) is None
    product = write_product(tmp_path, fixed)
    assert _run("quantize", "--product", str(product), "--calib", str(data["calib"]), "--check", "20") == 0
    out = capsys.readouterr().out
    assert "calibration on 20 image(s)" in out
    assert "verdict agreement:" in out and "inference p50: fixed.onnx (fp32)" in out
    written = tmp_path / "fixed.int8.onnx"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644  # the service's user reads what the tool wrote
    # a batch the model cannot take is a message and exit 2, not an ONNX Runtime traceback
    assert _run("quantize", "--product", str(product), "--calib", str(data["calib"]), "--batch", "8") == \
        ExitCode.CONFIG
    assert "fixed.onnx takes batches of 1; --batch 8 cannot feed it" in capsys.readouterr().err


def test_int8_check_warns_when_slower_or_disagreeing() -> None:
    report = CompareReport("m.onnx (fp32)", "m.int8.onnx (int8)", images=10, agree=9,
                           disagreements=["part_03.png: pass vs reject"])
    warnings = SpeedCheck(report, ms_a=11.6, ms_b=19.8).warnings()
    assert warnings[0].startswith("WARNING: m.int8.onnx (int8) is not faster than m.onnx (fp32) on this machine "
                                  "(p50 19.80 ms vs 11.60 ms)")
    assert "disagrees with m.onnx (fp32) on 1 of 10 image(s) (90.0 % agreement)" in warnings[1]
    assert SpeedCheck(CompareReport("a", "b", images=10, agree=10), ms_a=10.0, ms_b=4.0).warnings() == []


def test_compare_counts_the_differences_it_does_not_list() -> None:
    report = CompareReport("a", "b", images=60, agree=8, disagreements=[f"p{i}.png: pass vs reject" for i in range(52)])
    table = report.table()
    assert table.count("  differs: ") == 20
    assert "... and 32 more difference(s) not listed (52 in all; --show 0 lists every one)" in table
    assert report.table(show=None).count("  differs: ") == 52 and "more difference" not in report.table(None)


def test_atomic_write_is_world_readable(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x.engine", b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.engine").stat().st_mode) == 0o644


def test_eval_lists_every_misclassified_file_and_writes_them_with_heatmaps(data, tmp_path, capsys) -> None:
    import csv

    import cv2
    import yaml

    from tests.engine_fixtures import product_dict

    pr = product_dict(data["model"])
    pr["rules"][0]["min_score"] = 1e-6  # rejects everything: every good part is a miss, known in advance
    product = tmp_path / "strict.yaml"
    product.write_text(yaml.safe_dump(pr, sort_keys=False))
    good = sorted(f"pass/{p.name}" for p in (data["test"] / "pass").glob("*.png"))  # ImageFolder layout
    errors = tmp_path / "errs"
    assert _run("eval", "--product", str(product), "--images", str(data["test"]), "--model", str(data["model"]),
                "--repeat", "1", "--png", "", "--errors", str(errors)) == 0
    out = capsys.readouterr().out
    assert f"parts.onnx: {len(good)} misclassified:" in out
    listed = [line.split(":")[0].strip() for line in out.splitlines() if ": truth pass, got reject" in line]
    assert sorted(listed) == good  # every one, by name, none hidden
    written = sorted(p.name for p in (errors / "parts.onnx" / "pass_as_reject").glob("*.jpg"))
    assert written == sorted(g.replace("/", "__") + ".jpg" for g in good)
    first = cv2.imread(str(next((errors / "parts.onnx" / "pass_as_reject").glob("*.jpg"))))
    assert first is not None and first.shape[0] > 0
    rows = list(csv.DictReader((errors / "parts.onnx" / "misses.csv").open()))
    assert sorted(r["file"] for r in rows) == good and {r["verdict"] for r in rows} == {"reject"}


def test_eval_recall_by_class_from_the_folder_layout(data, tmp_path, capsys) -> None:
    import json
    import shutil

    folder = tmp_path / "set"
    rejects = sorted((data["test"] / "reject").glob("*.png"))
    for p in (data["test"] / "pass").glob("*.png"):
        (folder / "good").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / "good" / p.name)
    for i, p in enumerate(rejects):  # class-level truth from defect/<kind>/
        kind = "scratch" if i % 2 else "spot"
        (folder / "defect" / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / "defect" / kind / p.name)
    js = tmp_path / "eval.json"
    assert _run("eval", "--product", str(data["product"]), "--images", str(folder), "--model", str(data["model"]),
                "--repeat", "1", "--png", "", "--errors", "", "--json", str(js)) == 0
    [row] = json.loads(js.read_text())
    by_kind = row["recall_by_kind"]
    assert set(by_kind) == {"scratch", "spot"}
    assert by_kind["spot"]["parts"] == (len(rejects) + 1) // 2 and by_kind["scratch"]["parts"] == len(rejects) // 2
    assert "recall by kind: scratch" in capsys.readouterr().out


def test_two_runtimes_for_compare_are_closed_also_when_the_second_model_cannot_load(data, tmp_path,
                                                                                    monkeypatch) -> None:
    from inspectd.config.load import load_product
    from inspectd.engines import compare

    opened = []
    real = compare.runtime_for_model

    def recording(product, model):  # type: ignore[no-untyped-def]
        opened.append(real(product, model))
        return opened[-1]

    monkeypatch.setattr(compare, "runtime_for_model", recording)
    product = load_product(data["product"])
    with compare.runtimes_for_models(product, data["model"], data["model"]) as (ra, rb):
        assert not ra.closed and not rb.closed
    assert [rt.closed for rt in opened] == [True, True]
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load model"), \
            compare.runtimes_for_models(product, data["model"], tmp_path / "broken.onnx"):
        pytest.fail("the second model loaded")
    assert len(opened) == 3 and opened[2].closed
