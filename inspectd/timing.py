"""Every duration the station derives from its configuration, in seconds, computed in one place.

The station file speaks milliseconds (`cycle_budget_ms`, `grab_timeout_ms`, ...); the code runs on
`time.monotonic()` seconds. Converting and deriving here once keeps the pipeline, the watchdog and the
metrics agreeing on what "a cycle" is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inspectd.config.schema import StationConfig


def guard_s(budget_s: float) -> float:
    """The deadline keeper fires this much before the budget ends, so the fail-safe itself is on time."""
    return min(2e-3, 0.05 * budget_s)


@dataclass(frozen=True)
class CycleTiming:
    budget_s: float  # trigger -> verdict, per part
    grab_timeout_s: float  # a trigger with no frame after this is `no_frame`
    admission_lead_s: float  # admit the next part this much before the stage it waits for frees up

    @classmethod
    def of(cls, station: StationConfig) -> CycleTiming:
        return cls(budget_s=station.cycle_budget_ms / 1e3,
                   grab_timeout_s=station.pipeline.grab_timeout_ms / 1e3,
                   admission_lead_s=station.pipeline.admission_lead_ms / 1e3)

    @property
    def guard_s(self) -> float:
        return guard_s(self.budget_s)

    @property
    def deadline_s(self) -> float:
        """A part's deadline after its trigger: the keeper issues its fail-safe then."""
        return self.budget_s - self.guard_s

    @property
    def flow_s(self) -> float:
        """The watchdog's "not moving parts" limit: one part held longer than a cycle, and at least 1 s."""
        return max(self.budget_s, 1.0)

    @property
    def settle_s(self) -> float:
        """Long enough for every part inside to reach its verdict (at its deadline at the latest), plus 1 s."""
        return self.budget_s + 1.0
