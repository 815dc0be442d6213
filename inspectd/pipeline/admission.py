"""READY's promise to the PLC: a trigger sent while READY is shown will be inspected, within budget.

The PLC link calls `reserve()` before it shows READY. True holds room for exactly one part until the
acquire stage has turned that trigger into a part (`admitted()`): room in the first queue (so the
acquire stage's overflow policy never fires for it), an in-flight slot where the station limits them,
and an expected trigger-to-verdict time within the budget. A PLC that only triggers on READY therefore
never causes an `overflow` fail-safe; READY simply stays low while the pipeline is full.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from inspectd.pipeline.handoff import Handoff, Slots

FILL = 0.8  # admit while the expected trigger-to-verdict time is within this share of the budget


class Admission:
    def __init__(self, first_queue: Handoff, slots: Slots | None,
                 estimate: Callable[[int], tuple[float, int]], budget_s: float) -> None:
        """`estimate(extra)`: (expected seconds, parts ahead) for a part triggered now behind `extra` triggers
        that are reserved but not yet parts."""
        self._q, self._slots, self._estimate, self._budget = first_queue, slots, estimate, budget_s
        self._lock = threading.Lock()
        self._reserved = 0  # reserved and not yet a part (in the PLC link's queue, or being acquired)
        self.refusals: dict[str, int] = {"queue": 0, "slots": 0, "budget": 0}  # why READY was held low

    @property
    def reserved(self) -> int:
        return self._reserved

    def reserve(self) -> bool:
        """Room for one more triggered part? True reserves it for the next trigger (any thread)."""
        with self._lock:
            if self._q.qsize() + self._reserved >= self._q.maxsize:
                self.refusals["queue"] += 1
                return False
            expected, ahead = self._estimate(self._reserved)
            if ahead and expected > FILL * self._budget:  # an empty pipeline always gets a try
                self.refusals["budget"] += 1
                return False
            if self._slots is not None and not self._slots.acquire(blocking=False):
                self.refusals["slots"] += 1
                return False
            self._reserved += 1
            return True

    def admitted(self) -> None:
        """The acquire stage made a part of a reserved trigger (its part is in the first queue or settled)."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
