"""Issuing verdicts: exactly once per part, on time, in trigger order, to every sink without blocking.

A part's verdict is issued by whoever claims it first: the decide stage with the
real result, or the deadline keeper with the fail-safe. A late real result is
counted and dropped; it never overwrites an issued verdict.

Every sink (PLC, journal, metrics, archive, log) receives the verdicts in the order the parts were
registered (their trigger order): a verdict issued early waits for every earlier part's verdict.
The wait is bounded: each earlier part is settled by its deadline at the latest. One ordered stream
for all sinks means the journal's row order is the order the PLC was told.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog

from inspectd.decide import Decision, failsafe, make_verdict
from inspectd.pipeline.stats import PipelineStats
from inspectd.types import Outcome, Part, Reason, Verdict

log = structlog.get_logger("inspectd.verdicts")


class VerdictSink(Protocol):
    """Receives every verdict. `submit` must return at once (queue it, drop and count if full)."""

    def submit(self, verdict: Verdict, part: Part) -> None: ...


class VerdictBus:
    def __init__(self, stats: PipelineStats) -> None:
        self.sinks: list[VerdictSink] = []
        self.stats = stats
        self.on_settled: Callable[[Part], None] | None = None  # e.g. frees an in-flight slot
        # A station-wide reason to fail-safe every part (e.g. the journal cannot record it), or None.
        self.gate: Callable[[], Reason | None] | None = None
        self._order: deque[Part] = deque()  # registered parts, oldest first, until their verdict is delivered
        self._registered: set[int] = set()  # id() of the parts in _order
        self._issued: dict[int, tuple[Verdict, VerdictSink | None]] = {}  # id(part) -> verdict waiting its turn
        self._lock = threading.Lock()  # one delivery at a time: sinks see one ordered stream

    def register(self, part: Part) -> None:
        """`part` takes its place in the delivery order (call when it is made, i.e. in trigger order).
        A part that is never registered is delivered as soon as it is settled."""
        with self._lock:
            self._order.append(part)
            self._registered.add(id(part))

    @property
    def waiting(self) -> int:
        """Verdicts issued but held back behind an earlier part."""
        return len(self._issued)

    def settle(self, part: Part, decision: Decision, model_sha256: str = "",
               skip: VerdictSink | None = None) -> Verdict | None:
        """Issue `part`'s verdict if nobody has; returns it, or None when it was already issued.
        `skip`: a sink that already knows (e.g. the PLC link that refused the trigger itself)."""
        if not part.claim():
            self.stats.late_results += 1
            return None
        rt = part.runtime  # the recipe active at the part's trigger judges it, whatever was reloaded since
        if self.gate is not None and decision.outcome is not Outcome.FAILSAFE and (why := self.gate()) is not None:
            decision = failsafe(why)
        verdict = make_verdict(part, decision, rt.product if rt is not None else None,
                               model_sha256 or (rt.backend.model_sha256 if rt is not None else ""))
        self.stats.count(verdict)
        if self.on_settled is not None:
            self.on_settled(part)
        with self._lock:
            if id(part) not in self._registered:
                self._deliver(verdict, part, skip)  # not registered: nothing to wait for
                return verdict
            self._issued[id(part)] = (verdict, skip)
            while self._order and id(self._order[0]) in self._issued:
                head = self._order.popleft()
                self._registered.discard(id(head))
                v, s = self._issued.pop(id(head))
                self._deliver(v, head, s)
        return verdict

    def _deliver(self, verdict: Verdict, part: Part, skip: VerdictSink | None) -> None:
        """Under the lock: sinks only queue, so holding it is short."""
        for sink in self.sinks:
            if sink is skip:
                continue
            try:
                sink.submit(verdict, part)
            except Exception:  # a broken sink must not stop the others or the cycle
                self.stats.sink_errors += 1
                log.exception("sink_failed", sink=type(sink).__name__, seq=part.seq)

    def fail(self, part: Part, reason: Reason, model_sha256: str = "",
             skip: VerdictSink | None = None) -> Verdict | None:
        return self.settle(part, failsafe(reason), model_sha256, skip)


class DeadlineKeeper:
    """Issues the fail-safe verdict of every part still open at its deadline."""

    def __init__(self, bus: VerdictBus) -> None:
        self.bus = bus
        self._heap: list[tuple[float, int, Part]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="deadline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, part: Part) -> None:
        with self._cv:
            self._prune()
            heapq.heappush(self._heap, (part.deadline, part.seq, part))
            if self._heap[0][2] is part:
                self._cv.notify()

    def _prune(self) -> None:
        """Under the lock: drop the settled parts at the head. Parts settle about in deadline order, so this keeps
        the heap to the parts in flight: a settled part (its frame, its tensors) is not held until its deadline,
        and `open_parts` (READY's estimate, asked per trigger) scans a few parts, not a cycle's worth."""
        heap = self._heap
        while heap and heap[0][2].settled:
            heapq.heappop(heap)

    @property
    def open_parts(self) -> int:
        with self._cv:
            return sum(1 for _, _, p in self._heap if not p.settled)

    def holds(self, runtime: object) -> bool:
        """True while a part inspected with `runtime` still waits for its verdict."""
        with self._cv:
            return any(p.runtime is runtime and not p.settled for _, _, p in self._heap)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._heap:
                    self._cv.wait()
                if self._stop and not self._heap:
                    return
                deadline, _, part = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0 and not part.settled:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not part.settled and self.bus.fail(part, Reason.DEADLINE) is not None:
                log.warning("deadline_missed", seq=part.seq, part_id=part.part_id, stages_ms=part.stage_ms())

    def stop(self) -> None:
        """Stop after the parts being watched are settled (by their stage or their deadline)."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join()
