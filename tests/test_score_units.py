"""Thresholds in the score's own units: a classifier that outputs raw logits (`activation: none`) is thresholded
on the logit (negative values included); with softmax/sigmoid the threshold stays a probability in (0, 1]."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspectd.config.load import load_config
from inspectd.decide import decide
from inspectd.errors import ConfigError
from inspectd.types import Findings, Outcome
from tests.conftest import write_station


def test_raw_logit_threshold_is_accepted_and_decides(tmp_path: Path) -> None:
    st = write_station(tmp_path, product={"model": {"activation": "none"},
                                          "rules": [{"name": "defect", "class": "defect", "min_score": -1.5,
                                                     "result_code": 2}]})
    product = load_config(st).products["disc-a"]
    assert decide(Findings({"good": 3.0, "defect": -1.5}, "good"), product).outcome is Outcome.REJECT
    assert decide(Findings({"good": 3.0, "defect": -1.6}, "good"), product).outcome is Outcome.PASS
    st = write_station(tmp_path, product={"model": {"activation": "none"},
                                          "rules": [{"name": "defect", "class": "defect", "min_score": 4.0}]})
    assert load_config(st).products["disc-a"].rules[0].min_score == 4.0  # logits are not bounded by 1


@pytest.mark.parametrize(("score", "message"), [(4.0, "must be <= 1"), (-1.5, "must be > 0 (got -1.5)"),
                                                (".nan", "min_score")])
def test_probability_threshold_still_bounded(tmp_path: Path, score: object, message: str) -> None:
    st = write_station(tmp_path, product={"rules": [{"name": "defect", "class": "defect", "min_score": score}]})
    if score == ".nan":  # YAML's NaN: never a threshold (every comparison with it is False)
        text = (tmp_path / "products" / "disc-a.yaml").read_text().replace("'.nan'", ".nan")
        (tmp_path / "products" / "disc-a.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(st)
    assert message in str(e.value)
