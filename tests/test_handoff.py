"""The stage hand-offs (a bounded queue and the in-flight slots on C-level primitives) keep the semantics the
pipeline relies on: FIFO, a full queue blocks or refuses its producer, timeouts, counting; and the deadline keeper
lets go of a settled part before its deadline."""

from __future__ import annotations

import gc
import queue
import threading
import time
import weakref

import numpy as np
import pytest

from inspectd.decide import Decision
from inspectd.pipeline.handoff import Handoff, Slots
from inspectd.pipeline.stats import PipelineStats
from inspectd.pipeline.verdicts import DeadlineKeeper, VerdictBus
from inspectd.types import Frame, Outcome, Part, Trigger

WAIT = 10.0  # generous: a loaded machine must not fail these


def test_handoff_is_fifo_and_counts() -> None:
    q: Handoff[int] = Handoff(3)
    assert q.maxsize == 3 and q.qsize() == 0 and q.empty() and not q.full()
    for i in range(3):
        q.put(i)
    assert q.qsize() == 3 and q.full() and not q.empty()
    assert [q.get(timeout=WAIT) for _ in range(3)] == [0, 1, 2]
    assert q.qsize() == 0 and q.empty()


def test_a_full_handoff_refuses_or_times_out() -> None:
    q: Handoff[str] = Handoff(1)
    q.put_nowait("a")
    with pytest.raises(queue.Full):
        q.put_nowait("b")
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("b", timeout=0.05)
    assert time.monotonic() - t0 >= 0.04
    assert q.get_nowait() == "a"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(ValueError):
        Handoff(0)


def test_a_blocked_producer_goes_on_once_the_consumer_takes_one() -> None:
    q: Handoff[int] = Handoff(1)
    q.put(1)
    done = threading.Event()

    def produce() -> None:
        q.put(2)  # blocks: no room until the get below
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    assert not done.wait(0.05)
    assert q.get(timeout=WAIT) == 1
    assert done.wait(WAIT)
    assert q.get(timeout=WAIT) == 2
    t.join(WAIT)


def test_many_items_through_a_chain_of_threads_arrive_once_in_order() -> None:
    qs: list[Handoff[int | None]] = [Handoff(2) for _ in range(3)]
    got: list[int] = []

    def stage(i: int) -> None:
        while (x := qs[i].get(timeout=WAIT)) is not None:
            if i + 1 < len(qs):
                qs[i + 1].put(x)
            else:
                got.append(x)
        if i + 1 < len(qs):
            qs[i + 1].put(None)

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for x in range(2000):
        qs[0].put(x)
    qs[0].put(None)
    for t in threads:
        t.join(WAIT)
    assert got == list(range(2000))
    assert all(q.qsize() == 0 for q in qs)


def test_slots_limit_and_release() -> None:
    s = Slots(2)
    assert s.acquire() and s.acquire(timeout=WAIT)
    assert s.free == 0
    assert not s.acquire(blocking=False)
    assert not s.acquire(timeout=0.05)
    got = threading.Event()
    t = threading.Thread(target=lambda: s.acquire(timeout=WAIT) and got.set())
    t.start()
    assert not got.wait(0.05)
    s.release()
    assert got.wait(WAIT)
    t.join(WAIT)
    s.release()
    s.release()
    assert s.free == 2
    with pytest.raises(ValueError):
        s.release()  # more releases than acquires: a bug, as with threading.BoundedSemaphore


def test_the_keeper_lets_go_of_a_settled_part_before_its_deadline() -> None:
    """A settled part (its frame, tensors, outputs) is not held for the rest of its cycle budget: the keeper
    drops it as the next part is watched. With a GenICam frame pool, a frame held is a pool slot held."""
    bus = VerdictBus(PipelineStats())
    keeper = DeadlineKeeper(bus)  # not started: its thread would drop a settled head too, when it gets to run
    image = np.zeros((8, 8), np.uint8)
    ref = weakref.ref(image)
    first = Part(1, Trigger(1, time.monotonic()), "p", deadline=time.monotonic() + 600)
    first.frame = Frame(image, "Mono8", time.monotonic())
    del image
    bus.register(first)
    keeper.watch(first)
    assert keeper.open_parts == 1
    bus.settle(first, Decision(Outcome.PASS, "", 0, 0.1))
    del first
    second = Part(2, Trigger(2, time.monotonic()), "p", deadline=time.monotonic() + 600)
    bus.register(second)
    keeper.watch(second)
    gc.collect()
    assert ref() is None  # 600 s before its deadline
    assert keeper.open_parts == 1
