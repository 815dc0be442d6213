"""What the plant outputs say about the station: counters, active recipe, readiness, the last verdict.

Read from the pipeline's own counters (the ones /metrics exports), so MQTT, OPC UA and Prometheus agree.
`daemon` is duck-typed: inspectd.daemon imports this package, not the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inspectd.metrics import readiness
from inspectd.types import Part, Verdict


@dataclass(frozen=True)
class Snapshot:
    parts: int = 0
    passes: int = 0
    rejects: int = 0
    failsafes: int = 0
    product: str = ""
    recipe_no: int = 0
    ready: bool = False
    checks: dict[str, bool] = field(default_factory=dict)
    last: Verdict | None = None

    def counters(self) -> dict[str, Any]:
        return {"parts": self.parts, "pass": self.passes, "reject": self.rejects, "failsafe": self.failsafes,
                "yield": round(self.passes / self.parts, 6) if self.parts else None,
                "product": self.product, "recipe_no": self.recipe_no, "ready": self.ready}


class StationView:
    """A VerdictSink that only remembers the last verdict (one attribute store on the hot path)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.last: Verdict | None = None

    def submit(self, verdict: Verdict, part: Part | None = None) -> None:
        self.last = verdict

    def snapshot(self) -> Snapshot:
        d = self.daemon
        pipeline = getattr(d, "pipeline", None)
        checks = readiness(d)
        if pipeline is None:  # starting: the product the station file names
            config = getattr(d, "config", None)
            name = config.station.product if config is not None else ""
            product = config.products.get(name) if config is not None else None
            return Snapshot(product=name, recipe_no=int(getattr(product, "plc_id", 0)), checks=checks,
                            last=self.last)
        s = pipeline.stats
        by_outcome: dict[str, int] = {}
        for (_product, outcome), n in dict(s.verdicts).items():  # dict(): atomic copy under the GIL
            key = getattr(outcome, "value", outcome)
            by_outcome[key] = by_outcome.get(key, 0) + n
        rt = pipeline.active
        return Snapshot(parts=sum(by_outcome.values()), passes=by_outcome.get("pass", 0),
                        rejects=by_outcome.get("reject", 0), failsafes=by_outcome.get("failsafe", 0),
                        product=rt.name, recipe_no=int(getattr(rt.product, "plc_id", 0)),
                        ready=bool(checks) and all(checks.values()), checks=checks, last=self.last)
