"""Writing GenICam features by SFNC name, each write verified by reading it back.

Works on a GenApi node map (harvesters `remote_device.node_map`) through its
attribute interface only, so it needs no import of genicam itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inspectd.errors import CameraError, ExitCode
from inspectd.pixels import PIXEL_FORMATS

FeatureValue = float | int | str | bool
Node = Any  # a GenApi node or node map (harvesters' remote_device.node_map): genicam ships no type information

# GenApi EAccessMode values (GenApi/Types.h).
NI, NA, WO, RO, RW = 0, 1, 2, 3, 4
ACCESS_NAMES = {NI: "NI", NA: "NA", WO: "WO", RO: "RO", RW: "RW"}

# Writes depend on each other: a selector picks what the following features mean, PixelFormat and the
# image size bound the offsets, and TriggerMode=On should come last so the camera never waits on a
# half-configured trigger. Names not listed keep their recipe order, between these groups.
_FIRST = ("TriggerSelector", "LineSelector", "GainSelector", "PixelFormat", "Width", "Height", "OffsetX", "OffsetY")
_LAST = ("TriggerSource", "TriggerActivation", "TriggerMode")


class FeatureError(CameraError):
    """Features a recipe asks for that the camera lacks, refuses or does not keep; one problem per feature.

    A recipe that names a feature the camera does not have is a configuration fault: restarting will not fix it.
    """

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("camera features: " + "; ".join(problems))


@dataclass(frozen=True)
class FeatureResult:
    name: str
    wanted: FeatureValue
    read_back: FeatureValue | None
    problem: str | None  # None = written and verified


def ordered(features: Mapping[str, FeatureValue]) -> list[tuple[str, FeatureValue]]:
    def rank(item: tuple[int, tuple[str, FeatureValue]]) -> tuple[int, int]:
        i, (name, _) = item
        if name in _FIRST:
            return (0, _FIRST.index(name))
        if name in _LAST:
            return (2, _LAST.index(name))
        return (1, i)

    return [kv for _, kv in sorted(enumerate(features.items()), key=rank)]


def access_mode(node: Node) -> int:
    return int(node.node.get_access_mode())


def read_value(node: Node) -> FeatureValue | None:
    """The node's value, or None for nodes without one (commands, categories, registers)."""
    try:
        return node.value  # int/float/str/bool by the node's type
    except AttributeError:
        return None


def _coerce(node: Node, value: FeatureValue) -> FeatureValue:
    kind = type(node).__name__
    if kind == "IInteger":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if kind == "IFloat":
        return float(value)
    if kind == "IBoolean":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "on", "off"):
                raise ValueError(f"{value!r} is not a boolean")
            return value.lower() in ("true", "1", "on")
        return bool(value)
    if kind == "IEnumeration":
        symbolics = tuple(node.symbolics)
        if str(value) not in symbolics:
            raise ValueError(f"{value!r} is not one of {', '.join(symbolics)}")
        return str(value)
    return value if kind != "IString" else str(value)


def _same(node: Node, wanted: FeatureValue, got: FeatureValue | None) -> bool:
    if type(node).__name__ == "IFloat" and isinstance(got, float):
        # Cameras round floats to their own step (exposure in line periods, gain in dB steps).
        return math.isclose(got, float(wanted), rel_tol=1e-3, abs_tol=1e-6)
    return got == wanted


def write_feature(node_map: Node, name: str, value: FeatureValue) -> FeatureResult:
    """Write one feature and read it back. Never raises for a feature problem: the result says what went wrong."""
    if not hasattr(node_map, name):
        return FeatureResult(name, value, None, f"{name}: not provided by this camera")
    node = getattr(node_map, name)
    kind = type(node).__name__
    try:
        mode = access_mode(node)
    except Exception as e:  # a dead link fails here first
        return FeatureResult(name, value, None, f"{name}: cannot read access mode ({type(e).__name__}: {e})")
    if kind == "ICommand":
        return FeatureResult(name, value, None, f"{name}: is a command, not a setting")
    if mode in (NI, NA):
        return FeatureResult(name, value, None, f"{name}: not available now (access {ACCESS_NAMES[mode]})")
    if mode == RO:
        got = read_value(node)
        if got is not None and _same(node, value, got):  # already what the recipe wants: nothing to write
            return FeatureResult(name, value, got, None)
        return FeatureResult(name, value, got, f"{name}: read-only (is {got!r}, recipe wants {value!r})")
    try:
        wanted = _coerce(node, value)
        node.value = wanted
    except Exception as e:
        return FeatureResult(name, value, None, f"{name}: cannot set {value!r} ({type(e).__name__}: {e})")
    if mode == WO:
        return FeatureResult(name, value, None, None)  # write-only: nothing to verify against
    try:
        got = read_value(node)
    except Exception as e:
        return FeatureResult(name, value, None, f"{name}: read-back failed ({type(e).__name__}: {e})")
    if not _same(node, wanted, got):
        return FeatureResult(name, value, got, f"{name}: wrote {wanted!r}, read back {got!r}")
    return FeatureResult(name, value, got, None)


def apply_features(node_map: Node, features: Mapping[str, FeatureValue]) -> list[FeatureResult]:
    """Write every feature (in dependency order) and verify each; all are tried even when some fail."""
    results = [write_feature(node_map, name, value) for name, value in ordered(features)]
    fmt = next((r for r in results if r.name == "PixelFormat" and r.problem is None), None)
    if fmt is not None and str(fmt.read_back) not in PIXEL_FORMATS:
        results.append(FeatureResult("PixelFormat", fmt.wanted, fmt.read_back,
                                     f"PixelFormat: {fmt.read_back} is not one preprocessing accepts "
                                     f"({', '.join(PIXEL_FORMATS)})"))
    return results


def problems(results: list[FeatureResult]) -> list[str]:
    return [r.problem for r in results if r.problem is not None]
