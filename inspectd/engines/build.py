"""Engine build: ONNX -> serialized TensorRT engine + manifest, with a progress bar.

Works with TensorRT 10 (`tensorrt`, builds for the GPU it runs on) and TensorRT-RTX (`tensorrt_rtx`:
strongly typed, no precision flags or timing cache, builds ahead of time for a named compute capability,
also on a machine without a GPU). The TensorRT module is passed in (see inspectd.infer.tensorrt.load_trt).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import onnx
import structlog

from inspectd.engines.manifest import Manifest, ProfileSpec, atomic_write, write_engine
from inspectd.errors import ModelError
from inspectd.infer.base import sha256_file

log = structlog.get_logger("inspectd.engines")

Precision = Literal["fp32", "fp16", "int8"]


def is_rtx(trt) -> bool:
    return trt.__name__.split(".")[0] in ("tensorrt_rtx", "tensorrt_rtx_bindings")


def strongly_typed_only(trt) -> bool:
    """TensorRT-RTX (and a TensorRT without precision flags, as TensorRT 11 is announced) take precision
    from the model's own types and Q/DQ nodes."""
    return is_rtx(trt) or not hasattr(trt.BuilderFlag, "FP16")


def runtime_name(trt) -> Literal["tensorrt", "tensorrt-rtx"]:
    return "tensorrt-rtx" if is_rtx(trt) else "tensorrt"


def has_qdq(onnx_path: Path) -> bool:
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def jetson_release() -> tuple[str | None, str | None]:
    """(JetPack, L4T) of a Jetson build host; (None, None) elsewhere."""
    tegra = Path("/etc/nv_tegra_release")
    if not tegra.is_file():
        return None, None
    # e.g. "# R36 (release), REVISION: 3.0, GCID: ..." -> 36.3.0
    head = tegra.read_text().split(",")
    major = head[0].split("R")[-1].split()[0] if head else "?"
    revision = next((h.split(":")[1].strip() for h in head if "REVISION" in h), "0")
    jetpack = None
    if shutil.which("dpkg-query"):
        res = subprocess.run(["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"],
                             capture_output=True, text=True, check=False)
        jetpack = res.stdout.strip() or None
    return jetpack, f"{major}.{revision}"


class BuildProgress:
    """TensorRT's builder phases as one progress line. TensorRT nests phases; the bar follows the top-level
    phase and names the innermost one. Returning False from step_complete cancels the build."""

    def __init__(self, out: TextIO | None = None, width: int = 30) -> None:
        self.out = out if out is not None else sys.stderr
        self.width = width
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.phases: dict[str, tuple[str | None, int, int]] = {}  # name -> (parent, steps, done)
        self.cancelled = False
        self.lines = 0

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        self.phases[name] = (parent, max(int(steps), 0), 0)
        self._render(name)

    def step_complete(self, name: str, step: int) -> bool:
        parent, steps, _ = self.phases.get(name, (None, 0, 0))
        self.phases[name] = (parent, steps, int(step) + 1)
        if self.tty or parent is None:  # a file/journal gets top-level steps only
            self._render(name)
        return not self.cancelled

    def phase_finish(self, name: str) -> None:
        parent, _, _ = self.phases.pop(name, (None, 0, 0))
        if parent is None:
            self._render(name, done=True)

    def fraction(self) -> float:
        top = [(steps, done) for parent, steps, done in self.phases.values() if parent is None and steps]
        return min(1.0, sum(d for _, d in top) / sum(s for s, _ in top)) if top else 0.0

    def _render(self, name: str, done: bool = False) -> None:
        frac = 1.0 if done else self.fraction()
        filled = round(frac * self.width)
        text = f"building engine [{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:5.1f}%  {name}"
        self.out.write(("\r" + text.ljust(100)) if self.tty else text + "\n")
        self.out.flush()
        self.lines += 1

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")


def progress_monitor(trt, progress: BuildProgress):
    """An IProgressMonitor (TensorRT >= 10.0) forwarding to `progress`."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)  # pybind11 trampoline: initialise the base explicitly

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return Monitor()


@dataclass(frozen=True)
class BuildOptions:
    precision: Precision = "fp16"
    workspace_mb: int = 1024
    timing_cache: Path | None = None  # TensorRT 10 only: reused across builds, updated after each
    compute_capability: str | None = None  # TensorRT-RTX: target, e.g. "8.6"; TensorRT 10 builds for its GPU
    gpu_name: str = ""  # recorded in the manifest
    calibrator: object | None = None  # TensorRT 10 implicit INT8 (IInt8EntropyCalibrator2) for non-Q/DQ models


def _parse(trt, logger, onnx_path: Path):
    builder = trt.Builder(logger)
    # TensorRT 10: networks are always explicit-batch (flag 0). TensorRT-RTX: always strongly typed.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):  # path: for external weights
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}:\n{errors}")
    return builder, network, parser


def _set_precision(trt, config, opts: BuildOptions, qdq: bool, onnx_path: Path) -> str:
    """Builder flags for the requested precision; returns the INT8 mode recorded in the manifest."""
    if strongly_typed_only(trt):
        name = f"{trt.__name__} {trt.__version__}"
        if opts.precision == "fp16":
            raise ModelError(f"{name} builds strongly typed networks: export an FP16 ONNX and build it as fp32")
        if opts.precision == "int8" and not qdq:
            raise ModelError(f"{onnx_path.name} has no Q/DQ nodes; {name} needs an explicitly quantised "
                             f"model: run `inspectd quantize` first")
        return "qdq" if qdq else "none"
    if opts.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 builds fall back to FP16 where INT8 has no kernel
    if opts.precision != "int8":
        return "none"
    config.set_flag(trt.BuilderFlag.INT8)
    if qdq:
        return "qdq"
    if opts.calibrator is None:
        raise ModelError(f"{onnx_path.name} has no Q/DQ nodes: INT8 needs calibration images "
                         f"(--calib DIR) or a model from `inspectd quantize`")
    config.int8_calibrator = opts.calibrator  # deprecated in TensorRT 10.x, removed in 11: Q/DQ is the way on
    return "calibrated"


def build_engine(trt, onnx_path: Path, engine_path: Path, profiles: Sequence[ProfileSpec], opts: BuildOptions,
                 progress: BuildProgress | None = None) -> Manifest:
    """Parse, configure, build, write engine + manifest atomically. Raises ModelError on any failure;
    the previous engine (if any) stays in place until the new one is complete."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    int8_mode = _set_precision(trt, config, opts, has_qdq(onnx_path), onnx_path)

    names = {network.get_input(i).name for i in range(network.num_inputs)}
    created = []
    for spec in profiles:
        if spec.input not in names:
            raise ModelError(f"profile for input {spec.input!r}, but {onnx_path.name} has inputs {sorted(names)}")
        profile = builder.create_optimization_profile()
        profile.set_shape(spec.input, spec.min, spec.opt, spec.max)
        if config.add_optimization_profile(profile) < 0:
            raise ModelError(f"TensorRT rejected profile {spec.min}..{spec.max} for {spec.input!r}")
        created.append(profile)
    if int8_mode == "calibrated" and created:
        config.set_calibration_profile(created[0])  # implicit INT8 with dynamic shapes calibrates at one profile

    if is_rtx(trt):
        if not opts.compute_capability:
            raise ModelError("TensorRT-RTX builds ahead of time: name the target, e.g. --compute-capability 8.6")
        sm = "SM" + opts.compute_capability.replace(".", "")
        if not hasattr(trt.ComputeCapability, sm):
            choices = [c for c in trt.ComputeCapability.__members__ if c.startswith("SM")]
            raise ModelError(f"TensorRT-RTX {trt.__version__} cannot target {sm}; it offers {choices}")
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, sm), 0)
    elif opts.timing_cache is not None:  # TensorRT-RTX has no timing cache (its calls are no-ops there)
        old = opts.timing_cache.read_bytes() if opts.timing_cache.is_file() else b""
        cache = config.create_timing_cache(old)
        if not config.set_timing_cache(cache, False):  # False: refuse a cache made on another GPU
            log.warning("timing_cache_ignored", path=str(opts.timing_cache), reason="made on another device")
            config.set_timing_cache(config.create_timing_cache(b""), False)

    if progress is not None and hasattr(trt, "IProgressMonitor"):
        monitor = progress_monitor(trt, progress)
        config.progress_monitor = monitor
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if progress is not None:
        progress.close()
    if serialized is None:
        raise ModelError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above)")
    data = bytes(memoryview(serialized))
    if not is_rtx(trt) and opts.timing_cache is not None:
        atomic_write(opts.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))

    jetpack, l4t = jetson_release()
    manifest = Manifest(
        engine_file=engine_path.name, engine_sha256=hashlib.sha256(data).hexdigest(), engine_bytes=len(data),
        onnx_file=str(onnx_path.resolve()), onnx_sha256=sha256_file(onnx_path), runtime=runtime_name(trt),
        trt_version=trt.__version__, gpu_name=opts.gpu_name or f"SM{opts.compute_capability} target",
        compute_capability=opts.compute_capability or "?", jetpack=jetpack, l4t=l4t, precision=opts.precision,
        int8_mode=int8_mode, profiles=list(profiles), workspace_mb=opts.workspace_mb, build_seconds=seconds,
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), build_host=socket.gethostname())
    write_engine(engine_path, data, manifest)
    return manifest
