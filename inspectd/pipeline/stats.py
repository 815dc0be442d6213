"""Counters the pipeline keeps; metrics and STATUS= read them, nobody else writes them."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from inspectd.types import Outcome, Verdict


@dataclass
class PipelineStats:
    """Plain counters. Each is written by one thread only (or under the GIL as a single +=)."""

    parts_in: int = 0  # parts that entered the pipeline (acquire thread)
    refused: int = 0  # triggers refused before entering (PLC thread); they get a fail-safe verdict too
    overflows: int = 0
    late_results: int = 0
    stage_errors: int = 0
    sink_errors: int = 0
    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (product, outcome) -> n
    failsafe_reasons: Counter[str] = field(default_factory=Counter)
    last_verdict_t: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def count(self, v: Verdict) -> None:
        self.verdicts[(v.product, v.outcome.value)] += 1
        if v.outcome is Outcome.FAILSAFE:
            self.failsafe_reasons[v.reason] += 1
        self.last_verdict_t = v.t_verdict

    @property
    def verdicts_total(self) -> int:
        return sum(self.verdicts.values())

    def total(self, outcome: Outcome) -> int:
        return sum(n for (_, o), n in self.verdicts.items() if o == outcome.value)
