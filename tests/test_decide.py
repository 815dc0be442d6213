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
