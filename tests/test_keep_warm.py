"""Keep-warm (`watchdog.keep_warm_s`): a dummy inference on the inference thread after a pause without parts, never
while a part is on its way (triggered, exposing, transferring, preprocessing): that part would wait behind it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from inspectd.bench import Collector, Triggers
from inspectd.camera.registry import make_source
from inspectd.config.load import load_config
from inspectd.pipeline.pipeline import Pipeline
from inspectd.pipeline.runtime import build_runtime
from inspectd.types import Frame, Outcome
from tests.conftest import write_station
from tests.waiting import wait_until


def test_keep_warm_runs_when_idle_and_waits_while_a_part_is_on_its_way(tmp_path: Path) -> None:
    cfg = load_config(write_station(tmp_path, {"camera": {"bank": 4, "software_trigger": True},
                                               "watchdog": {"keep_warm_s": 0.05}, "cycle_budget_ms": 10_000}))
    st = cfg.station
    rt = build_runtime(st, cfg.products[st.product])
    source = make_source(st.camera)
    source.open()
    dummies: list[float] = []  # when keep-warm's all-zero inferences started
    real_infer, real_grab = rt.backend.infer, source.grab

    def infer(tensor: Any) -> dict[str, Any]:
        if not tensor.any():
            dummies.append(time.monotonic())
        return real_infer(tensor)

    exposing = threading.Event()  # set: the next grab is a long exposure and transfer, until `transferred`
    transferred = threading.Event()

    def grab(timeout: float) -> Frame | None:
        if exposing.is_set():
            transferred.wait(30)
        return real_grab(timeout)

    rt.backend.infer = infer  # to see keep-warm's runs
    source.grab = grab  # a camera whose exposure and transfer take as long as the test says
    triggers = Triggers()
    col = Collector(4)
    pipe = Pipeline(st, source, rt, sinks=[col], triggers=triggers)
    pipe.start()
    try:
        for i in range(3):
            triggers.fire(i)
        wait_until(lambda: len(col.verdicts) == 3, 30)
        wait_until(lambda: pipe.infer.warmups >= 2, 30)  # idle: keep-warm runs

        exposing.set()
        triggers.fire(3)
        wait_until(lambda: not pipe.idle, 30)  # the part is in: triggered, its frame not yet transferred
        t_open = time.monotonic()
        time.sleep(0.6)  # twelve keep-warm periods, six idle polls of the inference thread
        t_release = time.monotonic()
        transferred.set()
        col.done.wait(30)
        # A dummy whose check passed just before the part came in starts at once; none starts later.
        assert [t for t in dummies if t_open + 0.1 < t < t_release] == []
        assert col.verdicts[3].outcome in (Outcome.PASS, Outcome.REJECT)
        after = pipe.infer.warmups
        wait_until(lambda: pipe.infer.warmups > after, 30)  # idle again: keep-warm resumes
    finally:
        transferred.set()
        pipe.stop()
        source.close()
        rt.close()
