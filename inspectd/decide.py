"""Findings + the product's rules -> pass / reject; and the fail-safe verdict when there are no findings."""

from __future__ import annotations

import heapq
import math
import numbers
import time
from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING

from inspectd.types import Findings, Frame, Outcome, Part, Reason, Verdict

if TYPE_CHECKING:  # decide reads a recipe's rules; it never builds or validates one (importing it loads pydantic)
    from inspectd.config.schema import ProductConfig

# RESULT_CODE for fail-safe verdicts, above any rule's code (rules use 1..999).
FAILSAFE_CODES: dict[Reason, int] = {
    Reason.DEADLINE: 1001,
    Reason.OVERFLOW: 1002,
    Reason.NO_FRAME: 1003,
    Reason.CAMERA_LOST: 1004,
    Reason.STAGE_ERROR: 1005,
    Reason.SHUTDOWN: 1006,
    Reason.NOT_READY: 1007,
    Reason.BAD_OUTPUT: 1008,
    Reason.INTERRUPTED: 1009,
    Reason.JOURNAL_DOWN: 1010,
}


SCORES_KEPT = 32  # a verdict's scores: every class up to this many; beyond, the rules' classes and the highest


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    result_code: int
    score: float


def decide(findings: Findings, product: ProductConfig) -> Decision:
    """First matching rule rejects; the deciding score is the highest score any rule looked at. Thresholds are
    in the score's units (an anomaly recipe's sensitivity moves them: `ProductConfig.threshold`).

    A rule whose score is missing or not finite gives the fail-safe `bad_output`, never a pass: every
    comparison with NaN is False, so without this check a NaN would pass every rule."""
    values: list[float] = []
    for rule in product.rules:
        s = findings.scores.get(rule.class_name)
        if not isinstance(s, numbers.Real) or not math.isfinite(s):
            return failsafe(Reason.BAD_OUTPUT)
        values.append(float(s))
    score = max(values)
    for rule, s in zip(product.rules, values, strict=True):
        if s >= product.threshold(rule):
            return Decision(Outcome.REJECT, rule.name, rule.result_code, score)
    return Decision(Outcome.PASS, "", 0, score)


def failsafe(reason: Reason) -> Decision:
    return Decision(Outcome.FAILSAFE, reason.value, FAILSAFE_CODES[reason], 0.0)


def source_ref(frame: Frame | None) -> str:
    """The image's identity at its source, so a journal row leads back to it."""
    if frame is None:
        return ""
    meta = frame.meta
    if "file" in meta:
        return str(meta["file"])
    if "camera_ts_ns" in meta:
        return f"frame_id={frame.frame_id} camera_ts_ns={meta['camera_ts_ns']}"
    return f"frame_id={frame.frame_id}" if frame.frame_id >= 0 else ""


def make_verdict(part: Part, decision: Decision, product: ProductConfig | None, model_sha256: str) -> Verdict:
    """`product` is the recipe of the part's own runtime (fixed at its trigger), never a global lookup."""
    frame = part.frame
    # `failsafe: pass` is for parts that got no verdict in time; a model that answered with NaN/inf or the wrong
    # shape did answer, and is broken: its parts are never told OK, whatever the policy.
    plc_ok = decision.outcome is Outcome.PASS or (
        decision.outcome is Outcome.FAILSAFE and product is not None and product.failsafe == "pass"
        and decision.reason != Reason.BAD_OUTPUT.value)
    return Verdict(
        seq=part.seq,
        part_id=part.part_id,
        product=part.product,
        outcome=decision.outcome,
        reason=decision.reason,
        result_code=decision.result_code,
        plc_ok=plc_ok,
        score=decision.score,
        scores=kept_scores(part.findings.scores, product)
        if part.findings and decision.outcome is not Outcome.FAILSAFE else {},
        t_trigger=part.trigger.t_trigger,
        t_verdict=time.monotonic(),
        truth=frame.truth if frame else None,
        model_sha256=model_sha256,
        stage_ms=part.stage_ms(),
        wall_time=time.time(),
        recipe_no=product.plc_id if product is not None else 0,
        source_ref=source_ref(frame),
        region=_region(part, decision, product),
    )


def kept_scores(scores: Mapping[str, float], product: ProductConfig | None) -> dict[str, float]:
    """The scores a verdict carries to the journal, the PLC's sinks, MQTT and the console. A recipe's few classes all
    go; an ImageNet-sized head keeps its rule classes and its highest-scoring others, SCORES_KEPT in all: a thousand
    scores serialised per part cost the journal ~0.7 ms of GIL and 20 kB of disk (held by the inference thread's
    competitors; measured on the H200 host: EfficientNet-Lite0's p99 13-20 ms with the daemon's outputs)."""
    if len(scores) <= SCORES_KEPT:
        return dict(scores)
    kept = {r.class_name: scores[r.class_name] for r in (product.rules if product else ()) if r.class_name in scores}
    for name, value in heapq.nlargest(SCORES_KEPT, scores.items(), key=itemgetter(1)):
        if len(kept) >= SCORES_KEPT:
            break
        kept.setdefault(name, value)
    return kept


def _region(part: Part, decision: Decision, product: ProductConfig | None) -> tuple[int, int, int, int] | None:
    """Anomaly recipes: the frame area behind the score (their postprocessor leaves it in findings.extra)."""
    found = part.findings.extra.get("region") if part.findings is not None else None
    if found is None or decision.outcome is Outcome.FAILSAFE:
        return None
    from inspectd.anomaly.region import frame_region  # only anomaly recipes need the preprocessing geometry

    return frame_region(found, product, part.frame)
