"""The verdict bus delivers to every sink in part order: a verdict issued early waits for the earlier parts',
each of which the deadline keeper settles at its deadline at the latest."""

from __future__ import annotations

import time

from inspectd.decide import Decision
from inspectd.pipeline.stats import PipelineStats
from inspectd.pipeline.verdicts import DeadlineKeeper, VerdictBus
from inspectd.types import Outcome, Part, Trigger, Verdict

PASS = Decision(Outcome.PASS, "", 0, 0.1)


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[int, str]] = []

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        self.got.append((verdict.part_id, verdict.outcome.value))


def parts(bus: VerdictBus, n: int, deadline: float = 60.0) -> list[Part]:
    out = []
    for i in range(1, n + 1):
        p = Part(i, Trigger(100 + i, time.monotonic()), "p", deadline=time.monotonic() + deadline)
        bus.register(p)
        out.append(p)
    return out


def test_a_later_verdict_waits_for_every_earlier_one() -> None:
    bus, a, b = VerdictBus(PipelineStats()), Sink(), Sink()
    bus.sinks += [a, b]
    p1, p2, p3 = parts(bus, 3)
    bus.settle(p3, PASS)
    bus.settle(p2, PASS)
    assert a.got == [] and bus.waiting == 2
    bus.settle(p1, PASS)
    assert a.got == b.got == [(101, "pass"), (102, "pass"), (103, "pass")] and bus.waiting == 0


def test_the_wait_ends_at_the_earlier_parts_deadline() -> None:
    bus, sink = VerdictBus(PipelineStats()), Sink()
    bus.sinks.append(sink)
    keeper = DeadlineKeeper(bus)
    keeper.start()
    p1, p2 = parts(bus, 2, deadline=0.2)
    p2.deadline = time.monotonic() + 60
    keeper.watch(p1)
    keeper.watch(p2)
    bus.settle(p2, PASS)  # decided at once, but part 1 is still being inspected
    assert sink.got == []
    end = time.monotonic() + 10
    while len(sink.got) < 2 and time.monotonic() < end:
        time.sleep(0.01)
    keeper.stop()
    assert sink.got == [(101, "failsafe"), (102, "pass")]


def test_an_unregistered_part_is_not_held_back() -> None:
    bus, sink = VerdictBus(PipelineStats()), Sink()
    bus.sinks.append(sink)
    parts(bus, 1)  # part 1 open
    loose = Part(9, Trigger(999, time.monotonic()), "p", deadline=time.monotonic() + 60)
    bus.settle(loose, PASS)
    assert sink.got == [(999, "pass")]
