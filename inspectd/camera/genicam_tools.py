"""Station set-up helpers behind `inspectd cameras` and `inspectd camera-features SERIAL`.

Plain functions: the CLI prints what they return. Both open their own Harvester and
release it before returning; do not call them while the daemon holds the camera.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inspectd.camera.genicam_features import ACCESS_NAMES, read_value

# GenApi EVisibility
_VISIBILITY = {0: "Beginner", 1: "Expert", 2: "Guru", 3: "Invisible"}
_SKIP_KINDS = ("IPort", "IEnumEntry", "IRegister")  # plumbing, not settings


def list_cameras(producers: Sequence[Path], use_env: bool = True) -> list[dict[str, str]]:
    """Every device the producers see: vendor, model, serial, user_id, interface, tl_type, id, producer."""
    from inspectd.camera import genicam_device as dev

    out: list[dict[str, str]] = []
    for cti in dev.producer_files(producers, use_env):
        h = dev.new_harvester([cti])  # one producer at a time, so each device names its producer
        try:
            out += [{**dev.describe(d), "producer": str(cti)} for d in h.device_info_list]
        finally:
            h.reset()
    return out


def _describe_node(feature: Any) -> tuple[str, str, str, str] | None:
    node = feature.node
    kind = type(feature).__name__
    if kind in _SKIP_KINDS:
        return None
    access = ACCESS_NAMES.get(int(node.get_access_mode()), "?")
    if kind == "ICategory":
        return (node.name, "category", "", "")
    value = ""
    if access in ("RO", "RW"):
        try:
            v = read_value(feature)
            value = "" if v is None else repr(v)
            if kind == "IEnumeration":
                value += "  {" + ", ".join(feature.symbolics) + "}"
            elif kind in ("IInteger", "IFloat"):
                value += f"  [{feature.min} .. {feature.max}]"
        except Exception as e:
            value = f"<{type(e).__name__}>"
    return (node.name, f"{kind[1:]} {access}", _VISIBILITY.get(int(node.visibility), "?"), value)


def dump_features(producers: Sequence[Path], serial: str, use_env: bool = True) -> str:
    """The camera's node map, category by category: name, type and access, visibility, value and range."""
    from inspectd.camera import genicam_device as dev

    h = dev.new_harvester(dev.producer_files(producers, use_env))
    ia = None
    try:
        ia, info = dev.open_acquirer(h, serial, None, num_buffers=2)
        nm = ia.remote_device.node_map
        lines = [f"# {info['vendor']} {info['model']} serial={info['serial']} user_id={info['user_id'] or '-'}"]
        seen: set[str] = set()

        def walk(category: Any, depth: int) -> None:
            for feature in category.features:
                row = _describe_node(feature)
                if row is None or row[0] in seen:
                    continue
                seen.add(row[0])
                name, kind, vis, value = row
                indent = "  " * depth
                if kind == "category":
                    lines.append(f"{indent}{name}/")
                    walk(feature, depth + 1)
                else:
                    lines.append(f"{indent}{name:<32} {kind:<16} {vis:<9} {value}".rstrip())

        walk(nm.Root, 0)
        return "\n".join(lines) + "\n"
    finally:
        dev.teardown(ia, h)
