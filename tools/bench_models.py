#!/usr/bin/env python3
"""`inspectd bench` over real model topologies: the demo model, the `light_*.onnx` graphs inside the `onnx` wheel
(true compute cost, constant weights) and EfficientNet-Lite0 when tools/export_efficientnet.py has built it.

    .venv/bin/python tools/bench_models.py [--parts 300] [--models light_resnet50 ...] [--json out.json]

Each model runs through the real pipeline on the demo station's synthetic parts (the recipe's input name,
output and class count adapted to the model) and through the naive sequential loop; one table row per model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspectd.bench import bench_config, run_naive, run_pipeline  # noqa: E402
from inspectd.config.load import load_config  # noqa: E402

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def io_names(path: Path) -> tuple[str, str, int, str]:
    """(input name, output name, classes, activation) of a single-input classifier."""
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    out = m.graph.output[0]
    classes = [d.dim_value for d in out.type.tensor_type.shape.dim][1]
    softmaxed = any(n.op_type == "Softmax" for n in m.graph.node[-3:])
    return inp.name, out.name, classes, "none" if softmaxed else "softmax"


DEMO = (ROOT / "configs/demo", "disc-a")  # (config folder, product) of the demo station
ANOMALY = (ROOT / "configs/demo-anomaly", "disc-anomaly")  # PatchCore graph with its anomaly map


def model_paths() -> dict[str, Path]:
    """The benched models by name (EfficientNet-Lite0 once tools/export_efficientnet.py has built it)."""
    return {"demo_disc": ROOT / "engines/demo_disc.onnx", "demo_anomaly": ROOT / "engines/disc-anomaly.onnx",
            "efficientnet_lite0": ROOT / "engines/bench/efficientnet_lite0.onnx",
            **{p.stem: p for p in LIGHT.glob("light_*.onnx")}}


def available(names: list[str], width: int) -> Iterator[tuple[str, Path]]:
    """(name, model file) of each named model that is here; a line for each that is not."""
    paths = model_paths()
    for name in names:
        path = paths.get(name)
        if path is None or not path.exists():
            print(f"{name:{width}} (not available: {path})", flush=True)
            continue
        yield name, path


def recipe_for(model: Path) -> tuple[Path, str]:
    """The recipe a model is benched in: the anomaly graph in its own, any other in the demo's."""
    return ANOMALY if model.stem.startswith("disc-anomaly") else DEMO


def station_for(model: Path, folder: Path, recipe: tuple[Path, str] = DEMO) -> Path:
    """`recipe`'s station and product with `model` swapped in, for measuring capacity: own journal, no archive or
    metrics, a budget no model misses. On the demo recipe, a model other than the demo's own is set up as a generic
    classifier (input and output names from its graph)."""
    config, name = recipe
    station = yaml.safe_load((config / "station.yaml").read_text())
    product = yaml.safe_load((config / "products" / f"{name}.yaml").read_text())
    # a budget no model misses: this measures capacity (the daemon would fail-safe parts over its 50 ms)
    station.update(journal={"path": str(folder / "j.sqlite")}, archive={"enabled": False}, metrics={"enabled": False},
                   products_dir=str(folder / "products"), cycle_budget_ms=10_000)
    product["model"]["path"] = str(model)
    if recipe == DEMO and model.name != "demo_disc.onnx":
        inp, output, n, activation = io_names(model)
        classes = ["good", *(f"c{i}" for i in range(1, n))]
        product["model"] = {"path": str(model), "input": {"name": inp, "width": 224, "height": 224},
                            "scores_output": output, "activation": activation}
        product["classes"] = classes
        product["rules"] = [{"name": "c1", "class": "c1", "min_score": 0.5}]
    (folder / "products").mkdir(parents=True, exist_ok=True)
    (folder / "products" / f"{name}.yaml").write_text(yaml.safe_dump(product))
    (folder / "station.yaml").write_text(yaml.safe_dump(station))
    return folder / "station.yaml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=300)
    ap.add_argument("--models", nargs="*", default=["demo_disc", "light_squeezenet", "light_shufflenet",
                                                    "light_resnet50", "efficientnet_lite0"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    print(f"{'model':22} {'MB':>6} {'infer p50':>9} {'pipe fps':>8} {'bound':>7} {'eff':>5} {'naive':>7} "
          f"{'speedup':>7} {'e2e p99':>8}")
    for name, path in available(args.models, width=22):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = bench_config(load_config(station_for(path, Path(tmp), recipe_for(path))), in_flight=2)
            r = run_pipeline(cfg, args.parts, warmup=20)
            r["naive_fps"] = run_naive(cfg, args.parts, warmup=20)
        r.update(model=name, mb=path.stat().st_size / 2**20)
        rows.append(r)
        print(f"{name:22} {r['mb']:6.1f} {r['stages']['infer']['p50']:8.2f}ms {r['throughput_fps']:8.1f} "
              f"{r['bound_fps']:7.1f} {r['efficiency']:5.2f} {r['naive_fps']:7.1f} "
              f"{r['throughput_fps'] / r['naive_fps']:7.2f} {r['e2e_ms']['p99']:6.2f}ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
