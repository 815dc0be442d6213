"""Source configs and constructors, one entry per source type."""

from __future__ import annotations

from collections.abc import Callable

from inspectd.camera.base import Source
from inspectd.camera.genicam import GenICamConfig
from inspectd.camera.replay import ReplayConfig, ReplaySource
from inspectd.camera.synthetic import SyntheticConfig, SyntheticSource

CameraConfig = SyntheticConfig | ReplayConfig | GenICamConfig


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
