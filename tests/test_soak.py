"""Soak of mixed faults against the real daemon process: reloads that change the fail-safe policy, a NaN model
swapped in (accepted: NaN only on some parts) and refused (NaN everywhere), swapped out again, SIGTERM, kill -9
and restarts, all on one journal. Then every row is checked against the recipe its part was triggered under.

Each recipe version carries its own `plc_id`, so a row's `recipe_no` says which version judged it. The replay
camera serves dark and bright parts in turn; every model's answer to each is known, so every row can be checked:
counts of parts in, rows journaled and verdicts against their recipe must show zero differences."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml

from inspectd.infer.base import sha256_file
from tests.conftest import write_station
from tests.onnx_models import odd_output_model, slow_model
from tests.supervise_harness import START_S, DaemonProcess, NotifySocket, journal_rows
from tests.test_bad_output import replay_folder

pytestmark = pytest.mark.slow

CYCLES = 3  # reload cycles in the first run (each: policy pass, NaN model in, NaN-everywhere refused, back out)


class Station:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        images = replay_folder(tmp_path / "images", [20, 235, 40, 220])
        self.models = {  # "good" raises on bright parts: a fail-safe (stage_error) the recipe's policy decides
            "good": slow_model(tmp_path / "good.onnx", matmuls=1, fail_above=1.0),
            "nan_some": odd_output_model(tmp_path / "nan_some.onnx", "nan_when_bright"),
            "nan_all": odd_output_model(tmp_path / "nan_all.onnx", "nan"),
        }
        self.sha = {k: sha256_file(p) for k, p in self.models.items()}
        self.path = write_station(tmp_path, {
            "camera": {"type": "replay", "folder": str(images), "rate_hz": 150, "loop": True},
            "pipeline": {"queue_depth": 1, "overflow": "failsafe_newest"}, "cycle_budget_ms": 100,
            "archive": {"enabled": False}, "log": {"every_part": False}}, model=self.models["good"])
        self.product = tmp_path / "products" / "disc-a.yaml"
        self.base = yaml.safe_load(self.product.read_text())
        self.versions: dict[int, tuple[str, str]] = {}  # plc_id -> (failsafe policy, model)
        self.recipe(1, "reject", "good")

    def recipe(self, plc_id: int, failsafe: str, model: str) -> None:
        data = dict(self.base, plc_id=plc_id, failsafe=failsafe)
        data["model"] = dict(self.base["model"], path=str(self.models[model]))
        self.product.write_text(yaml.safe_dump(data, sort_keys=False))
        self.versions[plc_id] = (failsafe, model)

    def expected(self, row: dict) -> tuple:
        """(verdict, reason, plc_ok) the row's own recipe version gives its part; None when the part's verdict
        depends on timing (overflow, deadline): then only the policy's plc_ok is checked."""
        policy, model = self.versions[row["recipe_no"]]
        bright = "bright" in row["source_ref"]
        if row["verdict"] == "failsafe" and row["reason"] in ("overflow", "deadline", "shutdown"):
            return (row["verdict"], row["reason"], int(policy == "pass"))
        if not bright:
            return ("pass", "", 1)
        if model == "nan_some":
            return ("failsafe", "bad_output", 0)  # NG whatever the policy
        return ("failsafe", "stage_error", int(policy == "pass"))


def wait_rows(path: Path, more_than: int, timeout: float, alive) -> int:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    n = 0
    while time.monotonic() < end and alive():
        try:
            n = len(journal_rows(path))
        except Exception:  # the file may be mid-creation
            n = 0
        if n > more_than:
            return n
        time.sleep(0.2)
    raise AssertionError(f"journal stuck at {n} rows")


def test_soak_of_mixed_faults_loses_no_part_and_judges_each_by_its_recipe(tmp_path: Path) -> None:
    st = Station(tmp_path)
    journal = tmp_path / "journal.sqlite"
    notify = NotifySocket(tmp_path)
    switched_at: dict[int, float] = {}  # plc_id -> time.time() once the reload was seen applied
    sighup_at: dict[int, float] = {}  # plc_id -> time.time() just before the SIGHUP that asked for it
    runs: list[DaemonProcess] = []
    t0 = time.monotonic()

    def start() -> DaemonProcess:
        d = DaemonProcess(st.path, notify, watchdog_usec=8_000_000)
        runs.append(d)
        mark = len(notify.messages)
        assert notify.wait_for(lambda m: m.has("READY") and m.pid == d.pid, START_S, d.alive, since=mark), \
            d.stderr()[-3000:]
        return d

    def settle(d: DaemonProcess, parts: int = 120) -> None:
        wait_rows(journal, len(journal_rows(journal)) + parts if journal.exists() else parts, 60, d.alive)

    def reload(d: DaemonProcess, plc_id: int, failsafe: str, model: str, accepted: bool = True) -> None:
        st.recipe(plc_id, failsafe, model)
        n = len(d.events("reloaded")) if accepted else len(d.events("reload_rejected"))
        sighup_at[plc_id] = time.time()
        d.signal(signal.SIGHUP)
        assert d.wait_event("reloaded" if accepted else "reload_rejected", 60, after=n) is not None, \
            d.stderr()[-3000:]
        if accepted:
            switched_at[plc_id] = time.time()
        settle(d)

    plc_id = iter(range(2, 100))
    refused: set[int] = set()
    try:
        d = start()  # run 1: policy reject, slow good model
        settle(d)
        for _ in range(CYCLES):
            reload(d, next(plc_id), "pass", "good")  # fail-safes now told OK
            reload(d, next(plc_id), "pass", "nan_some")  # passes its self-check; NaN on bright parts only
            refused.add(next(plc_id))
            reload(d, max(refused), "pass", "nan_all", accepted=False)  # NaN everywhere: refused, old one judges
            reload(d, next(plc_id), "reject", "good")  # swapped out again, policy back to reject
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0, d.stderr()[-3000:]

        d = start()  # run 2, killed
        settle(d)
        d.proc.kill()
        d.wait(30)

        d = start()  # run 3: recovers run 2's parts, changes policy, killed again
        settle(d)
        reload(d, next(plc_id), "pass", "good")
        d.proc.kill()
        d.wait(30)

        d = start()  # run 4: recovers run 3's parts, swaps the NaN model in, stopped
        settle(d)
        reload(d, next(plc_id), "reject", "nan_some")
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0, d.stderr()[-3000:]
    finally:
        for r in runs:
            r.kill()
        notify.close()
    elapsed = time.monotonic() - t0

    rows = journal_rows(journal)
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    assert len(by_run) == 4

    # 1. Parts in == rows journaled, exactly once each: every run's seqs are 1..n without a gap or a repeat, the
    #    stopped runs' own count agrees (a killed run's accepted parts came back at the next start), and part
    #    numbers are unique station-wide.
    for run_rows in by_run.values():
        seqs = sorted(r["seq"] for r in run_rows)
        assert seqs == list(range(1, len(seqs) + 1))
    stopped = [r.events("stopped")[0] for r in (runs[0], runs[3])]
    firsts = list(by_run.values())
    assert [s["parts_in"] for s in stopped] == [len(firsts[0]), len(firsts[3])]
    assert all(s["journal_dropped"] == 0 for s in stopped)
    assert len({r["part_no"] for r in rows}) == len(rows)

    # 2. Every verdict is the one its own recipe version gives its part.
    interrupted = [r for r in rows if r["reason"] == "interrupted"]
    judged = [r for r in rows if r["reason"] != "interrupted"]
    wrong = [(r["seq"], r["recipe_no"], r["source_ref"], (r["verdict"], r["reason"], r["plc_ok"]), st.expected(r))
             for r in judged if (r["verdict"], r["reason"], r["plc_ok"]) != st.expected(r)]
    assert wrong == []
    assert all(r["model_sha256"] == st.sha[st.versions[r["recipe_no"]][1]] for r in rows)
    killed = {firsts[1][0]["run_id"], firsts[2][0]["run_id"]}
    assert all(r["plc_ok"] == 0 and r["run_id"] in killed for r in interrupted)
    assert not refused & {r["recipe_no"] for r in rows}  # a refused version never judged a part
    assert not [r for r in rows if r["verdict"] == "pass" and "bright" in r["source_ref"]]  # never a wrong pass

    # 3. The recipe a part was triggered under: versions follow each other in trigger order, none judges a part
    #    triggered before its SIGHUP, and every part triggered once a reload was applied has the new version.
    for run_rows in by_run.values():
        order = [r["recipe_no"] for r in sorted(run_rows, key=lambda r: r["seq"])]
        assert order == sorted(order)
    for plc_id, t in sighup_at.items():
        assert all(r["t_trigger"] >= t for r in rows if r["recipe_no"] == plc_id)
    for plc_id, t in switched_at.items():
        assert all(r["recipe_no"] >= plc_id for r in rows if r["t_trigger"] > t + 0.5)  # versions only go up

    # 4. The faults really happened: fail-safes under both policies, bad outputs, recovered/interrupted rows.
    kinds = {(st.versions[r["recipe_no"]][0], r["reason"]) for r in judged if r["verdict"] == "failsafe"}
    assert {("reject", "stage_error"), ("pass", "stage_error"), ("pass", "bad_output")} <= kinds
    print(f"\nsoak: {len(rows)} rows in {elapsed:.0f} s over 4 runs ({[len(v) for v in by_run.values()]}); "
          f"versions {sorted({r['recipe_no'] for r in rows})}; "
          f"stage_error {sum(r['reason'] == 'stage_error' for r in rows)} (told OK "
          f"{sum(r['reason'] == 'stage_error' and r['plc_ok'] for r in rows)}), "
          f"overflow {sum(r['reason'] == 'overflow' for r in rows)}, "
          f"bad_output {sum(r['reason'] == 'bad_output' for r in rows)}, "
          f"interrupted {len(interrupted)}, recovered {sum('recovered' in (r['note'] or '') for r in rows)}, "
          f"passes {sum(r['verdict'] == 'pass' for r in rows)}; differences 0")
