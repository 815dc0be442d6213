"""Decision rules and fail-safe codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspectd.config.load import load_config
from inspectd.decide import FAILSAFE_CODES, decide, failsafe
from inspectd.postprocess import Postprocessor
from inspectd.types import Findings, Outcome, Reason
from tests.conftest import write_station


@pytest.fixture
def product(tmp_path: Path):
    rules = [{"name": "crack", "class": "crack", "min_score": 0.3, "result_code": 7},
             {"name": "stain", "class": "stain", "min_score": 0.6, "result_code": 8}]
    st = write_station(tmp_path, product={"classes": ["good", "crack", "stain"], "rules": rules})
    return load_config(st).products["disc-a"]


def findings(**scores: float) -> Findings:
    return Findings(scores=scores, top_class=max(scores, key=scores.__getitem__))


def test_pass_when_no_rule_fires(product) -> None:
    d = decide(findings(good=0.75, crack=0.2, stain=0.05), product)
    assert (d.outcome, d.reason, d.result_code) == (Outcome.PASS, "", 0)
    assert d.score == pytest.approx(0.2)


def test_first_matching_rule_rejects_with_its_code(product) -> None:
    d = decide(findings(good=0.1, crack=0.3, stain=0.6), product)
    assert (d.outcome, d.reason, d.result_code) == (Outcome.REJECT, "crack", 7)
    d = decide(findings(good=0.3, crack=0.1, stain=0.6), product)
    assert (d.outcome, d.reason, d.result_code) == (Outcome.REJECT, "stain", 8)


def test_threshold_is_inclusive_and_rejects_below_it_pass(product) -> None:
    assert decide(findings(good=0.71, crack=0.29, stain=0.0), product).outcome is Outcome.PASS
    assert decide(findings(good=0.7, crack=0.3, stain=0.0), product).outcome is Outcome.REJECT


def test_failsafe_codes_are_distinct_and_above_rule_codes() -> None:
    codes = [failsafe(r).result_code for r in Reason]
    assert len(set(codes)) == len(Reason) and min(codes) > 999
    assert set(FAILSAFE_CODES) == set(Reason)


def test_postprocess_softmax_and_sigmoid(product) -> None:
    post = Postprocessor(product)
    f = post({"logits": np.array([[0.0, 0.0, np.log(2.0)]], np.float32)})
    assert f.scores == pytest.approx({"good": 0.25, "crack": 0.25, "stain": 0.5})
    assert f.top_class == "stain"
    with pytest.raises(ValueError, match="3 classes"):
        post({"logits": np.zeros((1, 2), np.float32)})


def test_a_verdict_keeps_every_score_of_a_small_head_and_rule_plus_top_classes_of_a_large_one(tmp_path: Path,
                                                                                             product) -> None:
    """A 1000-class head: the verdict (journal, MQTT, console) keeps SCORES_KEPT scores, the rules' classes first and
    then the highest others, so a thousand scores are not serialised per part; the decision still saw them all."""
    from inspectd.decide import SCORES_KEPT, make_verdict
    from inspectd.types import Part, Trigger

    classes = ["good", "crack", *(f"c{i}" for i in range(2, 1000))]
    rules = [{"name": "crack", "class": "crack", "min_score": 0.5, "result_code": 7}]
    big = load_config(write_station(tmp_path / "big", product={"classes": classes, "rules": rules})).products["disc-a"]
    probs = np.random.default_rng(1).dirichlet(np.ones(1000))
    scores = dict(zip(classes, probs.tolist(), strict=True))
    part = Part(1, Trigger(1, 0.0), "disc-a", deadline=1.0)
    part.findings = Findings(scores=scores, top_class=classes[int(np.argmax(probs))])
    v = make_verdict(part, decide(part.findings, big), big, "sha")
    highest = sorted(scores, key=scores.__getitem__, reverse=True)[:SCORES_KEPT - 1]
    assert len(v.scores) == SCORES_KEPT and "crack" in v.scores  # a low-scoring rule class is kept
    assert set(highest) <= set(v.scores) and all(v.scores[k] == scores[k] for k in v.scores)
    part.findings = findings(good=0.75, crack=0.2, stain=0.05)
    assert make_verdict(part, decide(part.findings, product), product, "sha").scores == part.findings.scores
