"""Config errors name file, line and key, and say what is expected; check-config exits 0 / 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inspectd.config.load import load_config
from inspectd.errors import ConfigError
from tests.conftest import ROOT, write_station


def problems_for(station: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(station)
    return e.value.problems


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_demo_config_is_valid() -> None:
    cfg = load_config(ROOT / "configs" / "demo" / "station.yaml")
    assert cfg.station.product in cfg.products
    assert cfg.products["disc-a"].model.path.is_absolute()


def test_out_of_range_value_names_file_line_key(tmp_path: Path) -> None:
    st = write_station(tmp_path, product={"rules": [{"name": "defect", "class": "defect", "min_score": -3}]})
    product = tmp_path / "products" / "disc-a.yaml"
    [p] = problems_for(st)
    assert p == f"{product}:{line_of(product, 'min_score')}: rules[0].min_score: must be > 0 (got -3)"


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    st = write_station(tmp_path, {"cycle_budget_msec": 40})
    [p] = problems_for(st)
    assert p.startswith(f"{st}:{line_of(st, 'cycle_budget_msec')}: cycle_budget_msec: unknown key")


def test_wrong_type_and_missing_key(tmp_path: Path) -> None:
    st = write_station(tmp_path, {"pipeline": {"queue_depth": "two"}})
    text = st.read_text().replace("name: demo\n", "")
    st.write_text(text)
    ps = problems_for(st)
    assert any(p.endswith("pipeline.queue_depth: must be a whole number (got 'two')")
               and f":{line_of(st, 'queue_depth')}:" in p for p in ps)
    assert any(p == f"{st}:1: name: is required" for p in ps)


def test_plugin_type_and_plugin_key_errors(tmp_path: Path) -> None:
    st = write_station(tmp_path, {"camera": {"type": "usb"}})
    [p] = problems_for(st)
    assert f"{st}:{line_of(st, 'type: usb')}: camera.type: type must be one of" in p

    st = write_station(tmp_path, {"camera": {"type": "synthetic", "defect_rate": 2}})
    [p] = problems_for(st)
    assert p == f"{st}:{line_of(st, 'defect_rate')}: camera.defect_rate: must be <= 1 (got 2)"


def test_cross_field_rule_error_names_the_problem(tmp_path: Path) -> None:
    st = write_station(tmp_path, product={"rules": [{"name": "scratch", "class": "scratchh", "min_score": 0.5}]})
    product = tmp_path / "products" / "disc-a.yaml"
    [p] = problems_for(st)
    assert p == (f"{product}:{line_of(product, 'scratchh')}: rules[0].class: 'scratchh' is not one of the classes "
                 "['good', 'defect']")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    st = write_station(tmp_path)
    product = tmp_path / "products" / "disc-a.yaml"
    lines = product.read_text().splitlines()
    lines.insert(3, "  bad: [unclosed")
    product.write_text("\n".join(lines) + "\n")
    [p] = problems_for(st)
    assert p.startswith(f"{product}:") and "YAML syntax" in p
    line = int(p.split(":")[1])
    assert 4 <= line <= 6


def test_missing_model_and_unknown_product(tmp_path: Path) -> None:
    st = write_station(tmp_path, product={"model": {"path": "nope.onnx"}})
    product = tmp_path / "products" / "disc-a.yaml"
    [p] = problems_for(st)
    assert p.startswith(f"{product}:{line_of(product, 'nope.onnx')}: model.path: file not found")

    st = write_station(tmp_path, {"product": "disc-z"})
    [p] = problems_for(st)
    assert p.startswith(f"{st}:{line_of(st, 'product: disc-z')}: product: no product 'disc-z'")


def test_duplicate_plc_id(tmp_path: Path) -> None:
    st = write_station(tmp_path)
    b = tmp_path / "products" / "disc-b.yaml"
    b.write_text((tmp_path / "products" / "disc-a.yaml").read_text().replace("name: disc-a", "name: disc-b"))
    ps = problems_for(st)
    assert any("plc_id: 1 is also used by product 'disc-a'" in p for p in ps)


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    st = write_station(tmp_path, {"cycle_budget_ms": -1, "pipeline": {"queue_depth": 0}})
    assert len(problems_for(st)) == 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspectd.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    ok = run_cli("check-config", str(ROOT / "configs" / "demo" / "station.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout

    st = write_station(tmp_path, {"cycle_budget_ms": -1, "pipeline": {"queue_depth": 0}})
    bad = run_cli("check-config", str(st))
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{st}:") for line in lines)
    assert "Traceback" not in bad.stderr


def test_run_with_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    st = write_station(tmp_path, {"cycle_budget_ms": 0})
    r = run_cli("run", "--config", str(st))
    assert r.returncode == 2
    assert "cycle_budget_ms: must be > 0 (got 0)" in r.stderr and "Traceback" not in r.stderr


def test_trigger_source_and_camera_trigger_must_agree(tmp_path: Path) -> None:
    cam = {"type": "genicam", "serial": "X", "trigger": "free_run", "producers": ["p/TLSimu.cti"]}
    st = write_station(tmp_path, {"camera": cam, "trigger": {"source": "hardware"}})
    [p] = problems_for(st)
    assert p == f"{st}:{line_of(st, 'source: hardware')}: trigger.source: hardware needs camera.trigger: hardware " \
        "(got free_run)"


def test_trigger_plc_needs_a_plc(tmp_path: Path) -> None:
    [p] = problems_for(write_station(tmp_path, {"trigger": {"source": "plc"}}))
    assert p.endswith("trigger.source: plc needs a plc section (type modbus_server, modbus_client or s7)")


def test_relative_paths_in_lists_resolve_against_the_file(tmp_path: Path) -> None:
    from inspectd.config.load import load_station

    cam = {"type": "genicam", "serial": "X", "trigger": "free_run", "producers": ["p/TLSimu.cti"]}
    st = load_station(write_station(tmp_path, {"camera": cam}))
    assert st.camera.producers == [tmp_path / "p" / "TLSimu.cti"]
