"""Pipeline behaviour: deadlines, fail-safes, overload, exactly one verdict per part."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from inspectd.camera.registry import make_source
from inspectd.config.load import Config, load_config
from inspectd.pipeline.pipeline import Pipeline
from inspectd.pipeline.runtime import ProductRuntime, build_runtime
from inspectd.types import STAGE_TIMES, Outcome, Part, Verdict
from tests.conftest import write_station


class Collect:
    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.lock = threading.Lock()

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        with self.lock:
            self.verdicts.append(verdict)

    def wait(self, n: int, timeout: float = 30) -> list[Verdict]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.verdicts) < n:
            time.sleep(0.01)
        return self.verdicts


class FaultyBackend:
    """Wraps the real backend; injects a delay or an exception for chosen calls (fault injection, not a mock)."""

    def __init__(self, inner, delay_s=lambda i: 0.0, raise_on=lambda i: False) -> None:
        self.inner, self.delay_s, self.raise_on = inner, delay_s, raise_on
        self.name, self.calls = "faulty", 0

    @property
    def model_sha256(self) -> str:
        return self.inner.model_sha256

    def load(self) -> None: ...

    def infer(self, tensor):
        self.calls += 1
        if self.raise_on(self.calls):
            raise RuntimeError("injected inference failure")
        time.sleep(self.delay_s(self.calls))
        return self.inner.infer(tensor)

    def close(self) -> None:
        self.inner.close()

    def describe(self):
        return self.inner.describe()


def setup(tmp_path: Path, station: dict | None = None, **faults) -> tuple[Config, Pipeline, Collect]:
    st = {"camera": {"bank": 8, "rate_hz": None}, **(station or {})}
    cfg = load_config(write_station(tmp_path, st))
    rt = build_runtime(cfg.station, cfg.products["disc-a"])
    if faults:
        rt = ProductRuntime(rt.product, rt.preprocess, FaultyBackend(rt.backend, **faults), rt.postprocess)
    source = make_source(cfg.station.camera)
    source.open()
    col = Collect()
    pipe = Pipeline(cfg.station, source, rt, sinks=[col])
    return cfg, pipe, col


def run_parts(pipe: Pipeline, col: Collect, n: int) -> list[Verdict]:
    pipe.set_max_parts(n)
    pipe.start()
    verdicts = col.wait(n)
    pipe.stop()
    return verdicts


def assert_exactly_once(pipe: Pipeline, verdicts: list[Verdict]) -> None:
    seqs = Counter(v.seq for v in verdicts)
    assert all(c == 1 for c in seqs.values()), "a part got two verdicts"
    assert sorted(seqs) == list(range(1, pipe.stats.parts_in + 1)), "a part got no verdict"


def test_every_part_gets_one_verdict(tmp_path: Path) -> None:
    _, pipe, col = setup(tmp_path, {"pipeline": {"max_in_flight": 2, "overflow": "block"}})
    verdicts = run_parts(pipe, col, 60)
    assert len(verdicts) == 60
    assert_exactly_once(pipe, verdicts)
    assert all(v.outcome is not Outcome.FAILSAFE for v in verdicts)
    assert all(tuple(v.stage_ms) == STAGE_TIMES for v in verdicts)  # every stage timed, in data-flow order


def test_decide_on_the_inference_thread_gives_the_same_verdicts(tmp_path: Path) -> None:
    """pipeline.decide_thread false: the same parts (synthetic bank, seed) get the same verdicts, once each, every
    stage timed; the decide thread takes no part and still stops with the others."""
    runs = {}
    for threaded in (True, False):
        station = {"pipeline": {"max_in_flight": 2, "overflow": "block", "decide_thread": threaded}}
        _, pipe, col = setup(tmp_path / str(threaded), station)
        verdicts = run_parts(pipe, col, 40)
        assert_exactly_once(pipe, verdicts)
        assert not any(w.is_alive() for w in pipe.workers)
        assert pipe.stats.late_results == 0 and pipe.stats.stage_errors == 0
        assert all(tuple(v.stage_ms) == STAGE_TIMES for v in verdicts)
        runs[threaded] = sorted((v.seq, v.outcome, v.reason, v.score) for v in verdicts)
        if not threaded:
            assert pipe.stamps["decide"].done == 0  # its thread never held a part
    assert runs[True] == runs[False]


def test_slow_stage_gets_failsafe_on_time_and_late_result_is_dropped(tmp_path: Path) -> None:
    budget_ms = 80
    _, pipe, col = setup(tmp_path, {"cycle_budget_ms": budget_ms, "pipeline": {"max_in_flight": 1}},
                         delay_s=lambda i: 0.3 if i == 3 else 0.0)
    verdicts = run_parts(pipe, col, 6)
    assert_exactly_once(pipe, verdicts)
    late = [v for v in verdicts if v.outcome is Outcome.FAILSAFE]
    # part 3 stalls inference for 300 ms; parts admitted behind it also miss their budget
    assert late[0].seq == 3 and {v.reason for v in late} == {"deadline"}
    assert all(v.result_code == 1001 and v.plc_ok is False for v in late)  # fail-safe default: reject at the PLC
    # issued at the budget, not when the slow stage finished (300 ms on): the upper bound leaves a loaded 2-core
    # box 170 ms of scheduling jitter and still tells the two apart
    assert all(budget_ms * 0.9 <= v.latency_ms < 250 for v in late)
    assert pipe.stats.late_results == 1  # part 3's real result arrived later and was dropped
    assert verdicts[-1].outcome is not Outcome.FAILSAFE  # and the line recovers


def test_raising_stage_gets_failsafe_and_pipeline_goes_on(tmp_path: Path) -> None:
    _, pipe, col = setup(tmp_path, {"pipeline": {"max_in_flight": 2}}, raise_on=lambda i: i in (2, 5))
    verdicts = run_parts(pipe, col, 10)
    assert_exactly_once(pipe, verdicts)
    errors = [v for v in verdicts if v.outcome is Outcome.FAILSAFE]
    assert len(errors) == 2 and {v.reason for v in errors} == {"stage_error"}
    assert pipe.stats.stage_errors == 2


def test_failsafe_pass_product_tells_plc_ok(tmp_path: Path) -> None:
    st = {"cycle_budget_ms": 60, "pipeline": {"max_in_flight": 1}}
    cfg = load_config(write_station(tmp_path, st | {"camera": {"bank": 4, "rate_hz": None}}, {"failsafe": "pass"}))
    rt = build_runtime(cfg.station, cfg.products["disc-a"])
    rt = ProductRuntime(rt.product, rt.preprocess, FaultyBackend(rt.backend, delay_s=lambda i: 0.2), rt.postprocess)
    source = make_source(cfg.station.camera)
    source.open()
    col = Collect()
    pipe = Pipeline(cfg.station, source, rt, sinks=[col])
    [v] = run_parts(pipe, col, 1)
    assert v.outcome is Outcome.FAILSAFE and v.plc_ok is True


@pytest.mark.parametrize("policy", ["failsafe_newest", "failsafe_oldest", "block"])
def test_overload_count_in_equals_count_out(tmp_path: Path, policy: str) -> None:
    # The camera delivers every 2 ms, inference takes 10 ms: the pipeline cannot keep up.
    _, pipe, col = setup(tmp_path, {"cycle_budget_ms": 100, "camera": {"rate_hz": 500},
                                    "pipeline": {"overflow": policy, "queue_depth": 2}},
                         delay_s=lambda i: 0.01)
    depths = {name: 0 for name in pipe.queues}
    done = threading.Event()

    def sample() -> None:  # the deepest each queue got while the camera outran inference
        while not done.wait(0.0005):
            for name, q in pipe.queues.items():
                depths[name] = max(depths[name], q.qsize())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        verdicts = run_parts(pipe, col, 80)
    finally:
        done.set()
        sampler.join()
    assert_exactly_once(pipe, verdicts)
    reasons = Counter(v.reason for v in verdicts if v.outcome is Outcome.FAILSAFE)
    assert pipe.stats.parts_in == 80 == len(verdicts)
    if policy == "block":
        assert pipe.stats.overflows == reasons["overflow"]  # only parts that could not wait past their deadline
    else:
        assert reasons["overflow"] == pipe.stats.overflows > 0
    # queue_depth bounds the queues: the one in front of the slow stage filled to it and never beyond
    assert depths["infer"] == 2 and max(depths.values()) <= 2, depths


def test_product_switch_between_parts(tmp_path: Path) -> None:
    cfg, pipe, col = setup(tmp_path, {"pipeline": {"max_in_flight": 1}, "camera": {"rate_hz": 200}})
    rt_b = build_runtime(cfg.station, cfg.products["disc-a"].model_copy(update={"name": "disc-b"}))
    pipe.set_max_parts(40)
    pipe.start()
    col.wait(10)
    pipe.switch(rt_b)
    verdicts = col.wait(40)
    pipe.stop()
    assert_exactly_once(pipe, verdicts)
    names = [v.product for v in sorted(verdicts, key=lambda v: v.seq)]
    switch_at = names.index("disc-b")
    assert set(names[:switch_at]) == {"disc-a"} and set(names[switch_at:]) == {"disc-b"}  # one clean cut


def test_stop_drains_parts_in_flight(tmp_path: Path) -> None:
    _, pipe, col = setup(tmp_path, {"camera": {"rate_hz": 400}, "pipeline": {"queue_depth": 4}},
                         delay_s=lambda i: 0.005)
    pipe.start()
    col.wait(20)
    pipe.stop()
    assert_exactly_once(pipe, col.verdicts)  # everything taken in got its verdict before stop() returned


def test_admission_waits_so_a_part_meets_a_free_stage(tmp_path: Path) -> None:
    _, pipe, _ = setup(tmp_path, {"pipeline": {"max_in_flight": 2, "admission_lead_ms": 0.0}})
    s = pipe.stamps
    s["acquire"].typical_s, s["preprocess"].typical_s, s["infer"].typical_s = 0.001, 0.002, 0.010
    assert pipe.admission_delay() == 0.0  # everything idle: admit now
    s["infer"].busy_since = time.monotonic()  # inference just started on the part ahead
    delay = pipe.admission_delay()
    assert 0.006 < delay <= 0.007  # 10 ms of inference left, the new part needs 3 ms to get there
    s["preprocess"].busy_since = time.monotonic()  # and another part is being preprocessed
    assert 0.016 < pipe.admission_delay() <= 0.017  # it goes to inference first: wait one more inference


def test_admission_lead_makes_admission_earlier(tmp_path: Path) -> None:
    _, pipe, _ = setup(tmp_path, {"pipeline": {"max_in_flight": 2, "admission_lead_ms": 2.0}})
    s = pipe.stamps
    s["infer"].typical_s, s["infer"].busy_since = 0.010, time.monotonic()
    assert 0.007 < pipe.admission_delay() <= 0.008


def test_bench_bound_counts_an_inline_decide_on_the_inference_thread(tmp_path: Path) -> None:
    """The bench's bound (and so its efficiency) comes from the busiest thread: with decide_thread false that is the
    inference thread's model time plus its decision time, not the model's alone."""
    from inspectd.bench import bench_config, run_pipeline

    station = {"camera": {"bank": 4}, "pipeline": {"decide_thread": False}}
    r = run_pipeline(bench_config(load_config(write_station(tmp_path, station)), in_flight=2), 30, warmup=5)
    assert r["parts"] == 30 and r["failsafes"] == 0
    assert r["bound_fps"] < 1e3 / r["stages"]["infer"]["p50"]
    assert "infer_idle_starved" in r["overhead_breakdown_ms"]


def test_the_pipeline_runs_at_its_stations_interpreter_switch_interval(tmp_path: Path) -> None:
    """pipeline.gil_switch_ms is applied as the pipeline starts (`inspectd run`, `bench` and the tools alike): 0.2 ms
    by default, what the station says otherwise."""
    before = sys.getswitchinterval()
    try:
        for station, want in (({}, 2e-4), ({"pipeline": {"gil_switch_ms": 5}}, 5e-3)):
            sys.setswitchinterval(1e-3)
            _, pipe, col = setup(tmp_path, station)
            run_parts(pipe, col, 3)
            assert sys.getswitchinterval() == pytest.approx(want)
    finally:
        sys.setswitchinterval(before)
