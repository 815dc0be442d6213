"""`inspectd bench`: the real pipeline as fast as it goes, against a naive sequential loop.

Prints per-stage p50/p99/max, end-to-end p50/p99/p99.9, throughput, the slowest-stage
bound (1 / max stage median) and the pipeline's efficiency against it, and peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from inspectd.camera.base import Source
from inspectd.camera.registry import make_source
from inspectd.config.load import Config, load_config
from inspectd.decide import decide
from inspectd.pipeline.pipeline import Pipeline
from inspectd.pipeline.runtime import ProductRuntime, build_runtime
from inspectd.pipeline.verdicts import VerdictSink
from inspectd.pipeline.warmup import pin
from inspectd.types import STAGE_TIMES, Outcome, Part, Trigger, Verdict


class Collector:
    """A VerdictSink keeping what the bench needs; signals when `n` verdicts have arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.verdicts: list[Verdict] = []
        self.stage_t: dict[int, dict[str, tuple[float, float]]] = {}  # seq -> each stage's (start, end), monotonic
        self.done = threading.Event()

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        self.verdicts.append(verdict)
        if part is not None:
            self.stage_t[verdict.seq] = dict(part.stage_t)  # not the part: its frame would stay alive
        if len(self.verdicts) >= self.n:
            self.done.set()


class Triggers:
    """Software triggers for a pipeline (its `triggers` argument): `fire(i)` sends part i now, as a PLC would."""

    def __init__(self) -> None:
        self._q: queue.Queue[Trigger] = queue.Queue()

    def fire(self, part_id: int) -> None:
        self._q.put(Trigger(part_id, time.monotonic()))

    def __call__(self, timeout: float) -> Trigger | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_config(cfg: Config, in_flight: int) -> Config:
    """Same station, but the source runs as fast as asked and admission keeps the queues short. A replay folder
    loops: the bench times warm-up plus N parts, however few images the folder holds."""
    st = cfg.station
    update: dict[str, object] = {"rate_hz": None} if hasattr(st.camera, "rate_hz") else {}
    if hasattr(st.camera, "loop"):
        update["loop"] = True
    camera = st.camera.model_copy(update=update) if update else st.camera
    pipeline = st.pipeline.model_copy(update={"max_in_flight": in_flight, "overflow": "block"})
    station = st.model_copy(update={"camera": camera, "pipeline": pipeline})
    return Config(station, cfg.products, cfg.station_path, cfg.product_paths)


HOPS = (("grab", "preprocess"), ("preprocess", "infer"), ("infer", "decide"))


def breakdown(times: list[dict[str, tuple[float, float]]], slowest: str, last: str | None = None) -> dict:
    """Where the pipeline's own time goes, from the parts' stage timestamps (in part order), in ms p50/p99/mean: the
    wait between two stages (the hand-off, plus any queueing for a busy stage), and the slowest stage's idle time
    between two parts, split into `starved` (its next part had not been handed on yet: upstream or admission was
    late) and `handoff` (it had, and the stage had not started it yet: wake-up, GIL). `last`: the stage after which
    the slowest stage's thread is free (an inline decide), when not the slowest stage itself."""

    def stats(xs: list[float]) -> dict[str, float]:
        ms = [x * 1e3 for x in xs]
        return {"p50": pct(ms, 50), "p99": pct(ms, 99), "mean": sum(ms) / len(ms) if ms else float("nan")}

    out = {f"{a}->{b}": stats([t[b][0] - t[a][1] for t in times if a in t and b in t]) for a, b in HOPS}
    before = dict((b, a) for a, b in HOPS).get(slowest)
    starved, handoff = [], []
    last = last or slowest
    for prev, t in itertools.pairwise(times):
        if last not in prev or slowest not in t:
            continue
        freed, began = prev[last][1], t[slowest][0]
        arrived = t[before][1] if before in t else freed  # when the part was handed on to the slowest stage
        starved.append(max(0.0, arrived - freed))
        handoff.append(max(0.0, began - max(freed, arrived)))
    out[f"{slowest}_idle_starved"] = stats(starved)
    out[f"{slowest}_idle_handoff"] = stats(handoff)
    return out


OUTPUTS = ("journal", "metrics", "log")


@contextlib.contextmanager
def daemon_outputs(names: Sequence[str], budget_s: float) -> Iterator[tuple[list[VerdictSink],
                                                                          Callable[[Part], None] | None]]:
    """The daemon's own verdict outputs, started as `inspectd run` starts them, in its order: (sinks, the
    on_accept hook). The journal writes into a temporary folder."""
    unknown = set(names) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}: choose from {', '.join(OUTPUTS)}")
    sinks: list[VerdictSink] = []
    accept: Callable[[Part], None] | None = None
    with contextlib.ExitStack() as stack:
        if "journal" in names:
            from inspectd.journal import Journal

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inspectd-bench-")))
            journal = Journal(folder / "journal.sqlite")
            journal.start()
            stack.callback(journal.close)
            sinks.append(journal)
            accept = journal.accept
        if "metrics" in names:
            from inspectd.metrics import Metrics

            metrics = Metrics(budget_s)
            metrics.start()
            stack.callback(metrics.close)
            sinks.append(metrics)
        if "log" in names:  # rendered as configured: `inspectd bench --outputs log` logs at info into /dev/null
            from inspectd.log import VerdictLogger

            sinks.append(VerdictLogger())
        yield sinks, accept


def run_pipeline(cfg: Config, parts: int, warmup: int = 50, outputs: Sequence[str] = ()) -> dict:
    st = cfg.station
    rt = build_runtime(st, cfg.products[st.product])
    source = make_source(st.camera)
    source.open()
    try:
        pin(rt, source)  # as the daemon does before READY (and warms it on the stages: _timed)
        with daemon_outputs(outputs, st.cycle_budget_ms / 1e3) as (sinks, accept):
            return _timed(cfg, rt, source, parts, warmup, sinks, accept)
    finally:  # explicitly, as the daemon does: a tool runs many benches in one process (GPU memory, pinned frames)
        rt.close()


def _timed(cfg: Config, rt: ProductRuntime, source: Source, parts: int, warmup: int, sinks: list[VerdictSink],
           accept: Callable[[Part], None] | None) -> dict:
    st = cfg.station
    col = Collector(parts + warmup)
    pipe = Pipeline(st, source, rt, sinks=[*sinks, col])
    pipe.on_accept = accept
    pipe.set_max_parts(parts + warmup)
    gc.collect()  # as `inspectd run` before READY (daemon.freeze_heap); undone below: a tool runs many benches
    gc.freeze()
    try:
        cpu0 = cpu_s()
        pipe.start(warm=[(rt, source.sample())])
        if not col.done.wait(timeout=600):
            print(f"bench: only {len(col.verdicts)} of {parts + warmup} verdicts within 600 s", file=sys.stderr)
        cpu = cpu_s() - cpu0
        pipe.stop()
    finally:
        gc.unfreeze()
    source.close()
    ordered = sorted(col.verdicts, key=lambda v: v.seq)
    measured = ordered[warmup:]
    if not measured:
        raise RuntimeError("no verdicts")
    span = max(v.t_verdict for v in measured) - min(v.t_trigger for v in measured)
    stages = {}
    for name in STAGE_TIMES:
        xs = [v.stage_ms[name] for v in measured if name in v.stage_ms]
        stages[name] = {"p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs) if xs else float("nan")}
    e2e = [v.latency_ms for v in measured]
    # the pipeline's own share of each part's latency: hand-offs, wake-ups, waiting for the GIL or a stage
    over = [v.latency_ms - sum(v.stage_ms.values()) for v in measured]
    # the bound comes from the busiest thread: with pipeline.decide_thread false the inference thread also decides
    threads: dict[str, tuple[str, ...]] = {name: (name,) for name in STAGE_TIMES}
    if not st.pipeline.decide_thread:
        threads["infer"] = ("infer", "decide")
        del threads["decide"]
    busy = {name: pct([sum(v.stage_ms[s] for s in group) for v in measured if all(s in v.stage_ms for s in group)],
                      50) for name, group in threads.items()}
    slowest = max(busy, key=lambda name: busy[name])
    bound = 1e3 / busy[slowest]
    fps = len(measured) / span
    ok = [v for v in measured if v.truth is not None and v.outcome is not Outcome.FAILSAFE]
    acc = sum((v.outcome.value == v.truth) for v in ok) / len(ok) if ok else None
    return {
        "throughput_fps": fps,
        "bound_fps": bound,
        "efficiency": fps / bound,
        "e2e_ms": {"p50": pct(e2e, 50), "p99": pct(e2e, 99), "p999": pct(e2e, 99.9), "max": max(e2e)},
        "stages": stages,
        "added_latency_p99_ms": pct(e2e, 99) - sum(s["p50"] for s in stages.values()),
        "overhead_ms": {"p50": pct(over, 50), "p99": pct(over, 99)},
        # CPU time of the whole process (every thread, inference included) per part, warm-up parts included:
        # on a shared machine it moves far less than latency does, so it compares pipeline changes best
        "cpu_ms_per_part": cpu * 1e3 / max(1, len(col.verdicts)),
        "overhead_breakdown_ms": breakdown([col.stage_t[v.seq] for v in measured if v.seq in col.stage_t], slowest,
                                           threads[slowest][-1]),
        "failsafes": sum(v.outcome is Outcome.FAILSAFE for v in measured),
        "accuracy_vs_truth": acc,
        "parts": len(measured),
        # the first parts after start: a runtime warmed before READY serves them like the thousandth
        "first_parts_e2e_ms": [round(v.latency_ms, 3) for v in ordered[:5]],
        "first_parts_failsafes": sum(v.outcome is Outcome.FAILSAFE for v in ordered[:warmup]),
        "backend": dict(rt.backend.describe()),
    }


def run_naive(cfg: Config, parts: int, warmup: int = 50) -> float:
    """grab, preprocess, infer, postprocess, decide one after another: the baseline."""
    st = cfg.station
    product = cfg.products[st.product]
    rt = build_runtime(st, product)
    source = make_source(st.camera)
    source.open()
    t0 = 0.0
    for i in range(parts + warmup):
        if i == warmup:
            t0 = time.monotonic()
        frame = source.grab(1.0)
        if frame is None:
            raise RuntimeError(f"the camera gave no frame within 1 s (part {i + 1} of the naive loop)")
        decide(rt.postprocess(rt.backend.infer(rt.preprocess(frame))), product)
    fps = parts / (time.monotonic() - t0)
    source.close()
    return fps


def after_pauses(cfg: Config, pauses: Sequence[float], keep_warm_s: float | None, warm: int = 30,
                 between: int = 10) -> dict:
    """The first part after each pause in `pauses` (seconds without parts) on one pipeline, keep-warm every
    `keep_warm_s` (None: off). `warm` parts first; each pause follows `between` parts, whose medians are the steady
    state it is compared with. Parts come one at a time, as from a line that is not busy. Returns {"parts":
    [{pause_s, outcome, e2e_ms, <stage>_ms, steady_e2e_ms, steady_<stage>_ms}, ...], "keep_warm_runs": n}."""
    st = cfg.station
    camera = st.camera.model_copy(update={"software_trigger": True}) if st.camera.type == "synthetic" else st.camera
    watchdog = st.watchdog.model_copy(update={"keep_warm_s": keep_warm_s})
    pipeline = st.pipeline.model_copy(update={"max_in_flight": None})
    st = st.model_copy(update={"camera": camera, "watchdog": watchdog, "pipeline": pipeline, "cycle_budget_ms": 1e4})
    rt = build_runtime(st, cfg.products[st.product])
    source = make_source(st.camera)
    source.open()
    triggers = Triggers()
    col = Collector(warm + len(pauses) * (between + 1))
    pipe = Pipeline(st, source, rt, sinks=[col], triggers=triggers)
    seq = itertools.count()

    def one() -> Verdict:
        i = next(seq)
        triggers.fire(i)
        while len(col.verdicts) <= i:
            time.sleep(0.0005)
        return col.verdicts[i]

    parts = []
    try:
        pin(rt, source)
        pipe.start(warm=[(rt, source.sample())])
        for _ in range(warm):
            one()
        for pause in pauses:
            steady = [one() for _ in range(between)]
            time.sleep(pause)
            v = one()
            parts.append({"pause_s": pause, "outcome": v.outcome.value, "e2e_ms": v.latency_ms,
                          **{f"{k}_ms": t for k, t in v.stage_ms.items()},
                          "steady_e2e_ms": float(np.median([s.latency_ms for s in steady])),
                          **{f"steady_{k}_ms": float(np.median([s.stage_ms[k] for s in steady]))
                             for k in v.stage_ms}})
    finally:
        pipe.stop()
        source.close()
        rt.close()
    return {"parts": parts, "keep_warm_runs": pipe.infer.warmups}


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """While measuring, anything written to stdout (a library's print, a native logger on fd 1) goes to stderr;
    yields the real stdout, where the report alone is written."""
    sys.stdout.flush()
    saved = os.dup(1)
    real = os.fdopen(os.dup(saved), "w")
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
        real.close()


def run_bench(args: argparse.Namespace) -> int:
    with stdout_to_stderr() as out:
        report = measure(args)
        if args.json:
            out.write(json.dumps(report, indent=2) + "\n")
        else:
            out.write("".join(f"{k}: {v}\n" for k, v in report.items()))
    return 0


def measure(args: argparse.Namespace) -> dict:
    cfg = bench_config(load_config(args.config), in_flight=args.in_flight)
    print(f"bench: {args.parts} parts through the pipeline...", file=sys.stderr)
    out = run_pipeline(cfg, args.parts, outputs=args.outputs)
    out["outputs"] = args.outputs
    print(f"bench: {args.parts} parts through the naive loop...", file=sys.stderr)
    out["naive_fps"] = run_naive(cfg, args.parts)
    out["speedup_vs_naive"] = out["throughput_fps"] / out["naive_fps"]
    if args.pause:
        every = args.pause / 4
        print(f"bench: the first part after {args.pause_repeats} pauses of {args.pause} s, without and with "
              f"keep-warm (every {every} s)...", file=sys.stderr)
        pauses = [args.pause] * args.pause_repeats
        out["after_pause_ms"] = {"pause_s": args.pause, "keep_warm_s": every,
                                 "keep_warm_off": after_pauses(cfg, pauses, None),
                                 "keep_warm_on": after_pauses(cfg, pauses, every)}
    if cfg.station.camera.type == "genicam" and cfg.station.camera.trigger != "hardware":
        from inspectd.camera.genicam import GenICamSource
        from inspectd.camera.genicam_bench import acquisition_overhead

        source = make_source(cfg.station.camera)
        assert isinstance(source, GenICamSource), "camera.type genicam builds a GenICamSource"
        source.open()
        try:
            out["acquisition"] = acquisition_overhead(source)
        finally:
            source.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["config"] = {"station": str(cfg.station_path), "product": cfg.station.product,
                     "backend": cfg.station.backend.type, "in_flight": args.in_flight}
    return out
