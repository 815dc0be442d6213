"""The YAML reader behind check-config, start-up and reload refuses what would surprise a running daemon: bytes
that are not UTF-8, a key given twice, aliases that expand beyond a small bound (an alias bomb), runaway nesting.
Each is a ConfigError `file:line: key: message`; a daemon sent such a file by SIGHUP keeps its old config."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inspectd.config.load import load_config
from inspectd.config.yamlfile import MAX_ALIAS_VALUES
from inspectd.errors import ConfigError
from tests.conftest import ROOT, write_station
from tests.onnx_models import brightness_model
from tests.supervise_harness import START_S, journal_rows, parts_in_status

# Nine levels of nine aliases: 9**9 = 387 million values once expanded, from a file of ~600 bytes.
BOMB = "lol:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def problems(station: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(station)
    return e.value.problems


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_bytes().split(b"\n"), 1) if text.encode() in line)


def recipe(tmp_path: Path) -> tuple[Path, Path]:
    station = write_station(tmp_path, model=brightness_model(tmp_path / "b.onnx"))
    return station, tmp_path / "products" / "disc-a.yaml"


def test_a_latin1_byte_names_file_line_and_key(tmp_path: Path) -> None:
    station, product = recipe(tmp_path)
    text = product.read_text().replace("name: defect", "name: Kratzer größer")
    product.write_bytes(text.encode("latin-1"))  # what an editor set to Windows-1252 saves
    line = line_of(product, "Kratzer")
    col = product.read_bytes().split(b"\n")[line - 1].index(b"\xf6") + 1
    assert problems(station) == [f"{product}:{line}: rules[0].name: byte 0xf6 at column {col} is not UTF-8: save "
                                 "the file as UTF-8 (any character, umlauts too, is fine in UTF-8)"]
    product.write_text(text)  # the same text saved as UTF-8 is fine
    assert load_config(station).products["disc-a"].rules[0].name == "Kratzer größer"


def test_a_latin1_byte_in_a_comment_names_the_key_before_it(tmp_path: Path) -> None:
    station, product = recipe(tmp_path)
    product.write_bytes(product.read_bytes().replace(b"classes:", b"# Pr\xfcfklassen\nclasses:"))
    [p] = problems(station)
    assert p.startswith(f"{product}:{line_of(product, 'Pr')}: preprocess.std[2]: byte 0xfc at column 5 is not UTF-8")


def test_check_config_reports_a_latin1_byte_without_a_traceback(tmp_path: Path) -> None:
    station, product = recipe(tmp_path)
    product.write_bytes(product.read_bytes().replace(b"name: disc-a", b"name: disc-\xe4"))
    r = subprocess.run([sys.executable, "-m", "inspectd.cli", "check-config", str(station)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith(f"{product}:{line_of(product, 'disc-')}: name: byte 0xe4 at column 12 is not UTF-8")
    assert "Traceback" not in r.stderr


def test_a_key_given_twice_is_an_error_at_the_second(tmp_path: Path) -> None:
    station, product = recipe(tmp_path)
    text = product.read_text()
    product.write_text(text.replace("failsafe: reject", "failsafe: pass\nfailsafe: reject"))
    first, second = line_of(product, "failsafe: pass"), line_of(product, "failsafe: reject")
    assert problems(station) == [f"{product}:{second}: failsafe: duplicate key (first given on line {first}); "
                                 "keep one"]
    station.write_text(station.read_text() + "camera:\n  type: synthetic\n")  # a whole section twice
    [p] = problems(station)
    assert p == (f"{station}:{len(station.read_text().splitlines()) - 1}: camera: duplicate key (first given on "
                 f"line {line_of(station, 'camera:')}); keep one")


def test_anchors_and_merge_keys_a_recipe_may_use_still_load(tmp_path: Path) -> None:
    station, product = recipe(tmp_path)
    data = yaml.safe_load(product.read_text())
    data["classes"] = ["good", "crack", "stain"]
    data.pop("rules")
    text = yaml.safe_dump(data, sort_keys=False) + (
        "rules:\n"
        "  - &strict {name: crack, class: crack, min_score: 0.3, result_code: 7}\n"
        "  - {<<: *strict, name: stain, class: stain}\n")
    product.write_text(text)
    rules = load_config(station).products["disc-a"].rules
    assert [(r.name, r.class_name, r.min_score, r.result_code) for r in rules] == [
        ("crack", "crack", 0.3, 7), ("stain", "stain", 0.3, 7)]


def test_an_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path: Path) -> None:
    station, product = recipe(tmp_path)
    product.write_text(product.read_text() + BOMB)
    # the child reports its own peak: VmHWM of its address space. getrusage's maxrss would not do: Linux carries
    # the forking process's peak into it across exec (and RUSAGE_CHILDREN is the largest child of the session)
    peak_file = tmp_path / "peak_kb"
    code = ("import sys\nfrom inspectd.cli import main\nrc = main(sys.argv[1:])\n"
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
            f"open({str(peak_file)!r}, 'w').write(hwm)\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "check-config", str(station)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    peak_mb = int(peak_file.read_text()) / 1024
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == (f"{product}:{line_of(product, '  i: &i')}: lol.i: aliases (*name) expand to more "
                                f"than {MAX_ALIAS_VALUES} values: write the values out instead")
    assert peak_mb < 400, peak_mb  # the interpreter and its imports; the old reader grew to gigabytes


def test_a_recursive_alias_and_runaway_nesting_are_config_errors(tmp_path: Path) -> None:
    station, product = recipe(tmp_path)
    good = product.read_text()
    product.write_text(good + "extra: &self {again: *self}\n")
    [p] = problems(station)
    assert p.startswith(f"{product}:{line_of(product, 'extra:')}: extra.again.again: nested more than 100 levels")
    product.write_text(good + "extra: " + "[" * 5000 + "]" * 5000 + "\n")  # PyYAML's composer would recurse out
    [p] = problems(station)
    assert p == f"{product}:{line_of(product, 'extra:')}: extra[0][0]: nested more than 100 levels deep"


def vm_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


def test_sighup_with_a_latin1_recipe_and_an_alias_bomb_keeps_the_old_config(tmp_path: Path, supervised) -> None:
    """The issue's cases: a Latin-1 recipe crashed the running daemon on SIGHUP (UnicodeDecodeError), an alias
    bomb grew it to 2.4 GB. Now each is a rejected reload, the line keeps inspecting on the old recipe."""
    station = write_station(tmp_path, {"camera": {"bank": 8}})
    product = tmp_path / "products" / "disc-a.yaml"
    good = product.read_text()
    notify, daemon = supervised(station, watchdog_usec=4_000_000)

    def reload_rejected(n: int) -> dict:
        mark = len(notify.messages)
        daemon.signal(signal.SIGHUP)
        assert notify.wait_for(lambda m: m.has("READY"), 60, daemon.alive, since=mark), daemon.stderr()[-2000:]
        rejected = daemon.wait_event("reload_rejected", 30, after=n)
        assert rejected is not None, daemon.stderr()[-2000:]
        serving = notify.wait_for(lambda m: parts_in_status(m) > parts_in_status(notify.messages[mark - 1]) + 2,
                                  30, daemon.alive, since=mark)
        assert serving is not None and "product=disc-a" in (serving.get("STATUS") or "")
        return rejected

    assert notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0), daemon.stderr()
    assert notify.wait_for(lambda m: parts_in_status(m) > 0, 30, daemon.alive, since=0)
    hwm_before = vm_kb(daemon.pid, "VmHWM")

    product.write_bytes(good.replace("name: disc-a", "name: disc-\xe4").encode("latin-1"))
    rejected = reload_rejected(0)
    assert rejected["problems"] == [f"{product}:{line_of(product, 'disc-')}: name: byte 0xe4 at column 12 is "
                                    "not UTF-8: save the file as UTF-8 (any character, umlauts too, is fine "
                                    "in UTF-8)"]

    product.write_text(good + BOMB)
    rejected = reload_rejected(1)
    assert rejected["problems"] == [f"{product}:{line_of(product, '  i: &i')}: lol.i: aliases (*name) expand "
                                    f"to more than {MAX_ALIAS_VALUES} values: write the values out instead"]
    grown_mb = (vm_kb(daemon.pid, "VmHWM") - hwm_before) / 1024
    assert grown_mb < 100, grown_mb

    product.write_text(good.replace("failsafe: reject", "failsafe: pass"))  # a valid change still applies
    mark = len(notify.messages)
    daemon.signal(signal.SIGHUP)
    assert daemon.wait_event("reloaded", 60) is not None, daemon.stderr()[-2000:]
    assert notify.wait_for(lambda m: m.has("READY"), 30, daemon.alive, since=mark)
    daemon.signal(signal.SIGTERM)
    rc = daemon.wait(30)
    assert rc == 0, daemon.stderr()[-3000:]
    assert daemon.events("reload_failed") == []  # each was a config error, none an unexpected exception
    rows = journal_rows(tmp_path / "journal.sqlite")
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert daemon.events("stopped")[0]["parts_in"] == len(rows)
