"""Install a station's configuration where a systemd unit reads it, with every path still pointing at something.

    sudo tools/install_config.py configs/demo/station.yaml /etc/inspectd --state-dir /var/lib/inspectd
    sudo tools/install_config.py configs/demo/station.yaml /etc/inspectd/line1 --state-dir /var/lib/inspectd-line1

`cp -r configs/demo/* /etc/inspectd/` breaks the recipes: their model paths are relative to the repository
(`../../../engines/demo_disc.onnx`). This copies the station file and its products, copies each product's model
and golden images next to them (`models/`, `products/golden/`) and rewrites those paths; journal and archive go
into the unit's state directory (the only writable place under ProtectSystem=strict), a replay folder becomes
absolute. Comments and layout of the files are kept (only the values change). Files are 0644, folders 0755.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

KEY = re.compile(r"^(\s+)([A-Za-z_]+):(\s*)([^\s#{\[][^#]*?)(\s*(#.*)?)$")
GOLDEN_IMAGE = re.compile(r"(image:\s*)([^,}\s#]+)")
Rewrite = Callable[[str], str]


def _quote(value: str) -> str:
    return value if re.fullmatch(r"[\w./@+-]+", value) else yaml.safe_dump(value, default_style='"').strip()


def rewrite(text: str, sections: dict[str, dict[str, Rewrite]]) -> str:
    """Replace the values of `section: {key: ...}` (block style, one level down) via the given functions."""
    out, section = [], ""
    for line in text.splitlines(keepends=True):
        top = re.match(r"^([A-Za-z_]+):", line)
        if top:
            section = top.group(1)
        else:
            keys = sections.get(section, {})
            m = KEY.match(line.rstrip("\n"))
            if m and m.group(2) in keys:
                value = keys[m.group(2)](m.group(4).strip().strip("'\""))
                line = f"{m.group(1)}{m.group(2)}:{m.group(3) or ' '}{_quote(value)}{m.group(5)}\n"
            elif section == "golden" and "image" in keys:
                image = keys["image"]
                line = GOLDEN_IMAGE.sub(lambda g, f=image: g.group(1) + _quote(f(g.group(2).strip("'\""))), line)
        out.append(line)
    return "".join(out)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.parent.chmod(0o755)
    shutil.copyfile(src, dst)
    dst.chmod(0o644)


def install(station: Path, dest: Path, state_dir: Path) -> list[str]:
    """Returns what was written, one line each."""
    station = station.resolve()
    src_dir = station.parent
    doc = yaml.safe_load(station.read_text(encoding="utf-8")) or {}
    products_src = (src_dir / doc.get("products_dir", "products")).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    done: list[str] = []

    def replay_folder(value: str) -> str:
        return str((src_dir / value).resolve())

    station_rules = {"journal": {"path": lambda v: str(state_dir / "journal.sqlite")},
                     "archive": {"path": lambda v: str(state_dir / "archive")},
                     "camera": {"folder": replay_folder},
                     "products_dir": {}}
    text = rewrite(station.read_text(encoding="utf-8"), station_rules)
    text = re.sub(r"(?m)^products_dir:(\s*)[^\s#]+", r"products_dir:\1products", text)
    (dest / "station.yaml").write_text(text, encoding="utf-8")
    (dest / "station.yaml").chmod(0o644)
    done.append(f"{dest / 'station.yaml'} (journal and archive under {state_dir})")
    for product in sorted(products_src.glob("*.yaml")):

        def model(value: str, product: Path = product) -> str:
            src = (product.parent / value).resolve()
            if not src.is_file():
                raise SystemExit(f"{product}: model.path: {src} not found (build or fetch the model first)")
            _copy(src, dest / "models" / src.name)
            done.append(f"{dest / 'models' / src.name} (from {src})")
            return f"../models/{src.name}"

        def golden(value: str, product: Path = product) -> str:
            src = (product.parent / value).resolve()
            _copy(src, dest / "products" / "golden" / src.name)
            return f"golden/{src.name}"

        text = rewrite(product.read_text(encoding="utf-8"), {"model": {"path": model}, "golden": {"image": golden}})
        out = dest / "products" / product.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.parent.chmod(0o755)
        out.write_text(text, encoding="utf-8")
        out.chmod(0o644)
        done.append(str(out))
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("station", type=Path, help="station YAML file to install (its products come along)")
    ap.add_argument("dest", type=Path, help="configuration folder the unit reads (/etc/inspectd or "
                    "/etc/inspectd/LINE)")
    ap.add_argument("--state-dir", type=Path, required=True, help="the unit's state directory (/var/lib/inspectd "
                    "or /var/lib/inspectd-LINE): journal.path and archive.path are set there")
    args = ap.parse_args(argv)
    for line in install(args.station, args.dest, args.state_dir):
        print(f"wrote {line}")
    print(f"check it: inspectd check-config --config {args.dest / 'station.yaml'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
