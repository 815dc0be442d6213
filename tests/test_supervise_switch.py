"""A product switch lands between parts: every part's frame was taken with its own recipe's camera features.

The daemon runs in-process (real pipeline, backend, journal) so the test can see each part's frame and runtime.
The camera is the synthetic one plus the one thing a real camera does with a recipe's features that matters
here: frames taken after apply_features() carry them (in meta; a real camera's frames carry them in their pixels).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from inspectd.camera import registry
from inspectd.camera.synthetic import SyntheticSource
from inspectd.config.load import load_config
from inspectd.daemon import Daemon, Options
from inspectd.supervise.systemd import Notifier
from inspectd.types import Frame, Part, Verdict
from tests.conftest import write_station

EXPOSURE = {"disc-a": 100.0, "disc-b": 200.0}


class ExposureCamera(SyntheticSource):
    exposure: object = None

    def apply_features(self, features: Mapping[str, object]) -> None:
        self.exposure = features.get("ExposureTime")
        time.sleep(0.002)  # the camera already uses it; the write's acknowledgement is still on its way back

    def grab(self, timeout: float) -> Frame | None:
        frame = super().grab(timeout)
        return None if frame is None else dataclasses.replace(frame, meta={**frame.meta, "exposure": self.exposure})


class Pairs:
    """A verdict sink that notes, for each part, the exposure its frame was taken with and its recipe's."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object, object]] = []

    def submit(self, verdict: Verdict, part: Part) -> None:
        if part.frame is not None:
            recipe = part.runtime.product
            self.seen.append((recipe.name, part.frame.meta["exposure"], recipe.camera_features["ExposureTime"]))


def test_switch_requests_from_another_thread_land_between_parts(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    station = write_station(tmp_path, {"camera": {"bank": 8, "rate_hz": None}, "pipeline": {"max_in_flight": 2},
                                       "log": {"every_part": False}},
                            {"camera_features": {"ExposureTime": EXPOSURE["disc-a"]}})
    recipe = yaml.safe_load((tmp_path / "products" / "disc-a.yaml").read_text())
    recipe.update(name="disc-b", plc_id=2, camera_features={"ExposureTime": EXPOSURE["disc-b"]})
    (tmp_path / "products" / "disc-b.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setitem(registry.FACTORIES, "synthetic", ExposureCamera)

    pairs = Pairs()
    daemon = Daemon(load_config(station), Options(handle_signals=False, extra_sinks=[pairs]), Notifier(None, None))
    runner = threading.Thread(target=daemon.run, name="daemon-main")
    runner.start()
    try:
        end = time.monotonic() + 60
        while len(pairs.seen) < 5 and time.monotonic() < end and runner.is_alive():
            time.sleep(0.01)
        assert len(pairs.seen) >= 5, "the daemon did not start inspecting"
        rng = random.Random(3)
        for i in range(60):  # like a PLC changing RECIPE_NO, at random moments relative to the parts
            assert daemon.switch_product("disc-b" if i % 2 == 0 else "disc-a")
            time.sleep(rng.uniform(0, 0.01))
    finally:
        daemon.request_stop()
        runner.join(30)
    assert not runner.is_alive()

    mismatched = [p for p in pairs.seen if p[1] != p[2]]
    assert mismatched == [], f"{len(mismatched)} parts inspected with another recipe's camera settings"
    names = [name for name, _, _ in pairs.seen]
    switches = sum(1 for a, b in itertools.pairwise(names) if a != b)
    assert switches >= 5, "the switches did not happen while parts flowed"
