"""Source constructors, one entry per source type (their configs: camera.config)."""

from __future__ import annotations

from collections.abc import Callable

from inspectd.camera.base import Source
from inspectd.camera.config import CameraConfig, GenICamConfig
from inspectd.camera.replay import ReplaySource
from inspectd.camera.synthetic import SyntheticSource


def _genicam(cfg: GenICamConfig) -> Source:
    from inspectd.camera.genicam import GenICamSource  # harvesters is an optional extra

    return GenICamSource(cfg)


FACTORIES: dict[str, Callable[..., Source]] = {
    "synthetic": SyntheticSource,
    "replay": ReplaySource,
    "genicam": _genicam,
}


def make_source(cfg: CameraConfig) -> Source:
    return FACTORIES[cfg.type](cfg)
