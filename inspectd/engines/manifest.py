"""The manifest written beside every engine, and the decision whether an engine may be loaded.

An engine is executable code for one GPU and one TensorRT version: it is verified against its
manifest (size and sha256, from the very bytes that will be deserialised) before TensorRT sees it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from inspectd.config.base import Model
from inspectd.errors import ModelError
from inspectd.infer.base import sha256_file

MANIFEST_FORMAT = 1
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # a model path ending so is a serialised TensorRT engine


class ProfileSpec(Model):
    """One optimisation profile: min/opt/max shape of one input."""

    input: str = Field(..., description="input tensor name")
    min: tuple[int, ...] = Field(..., description="smallest shape the profile accepts (NCHW)")
    opt: tuple[int, ...] = Field(..., description="shape TensorRT tunes for")
    max: tuple[int, ...] = Field(..., description="largest shape the profile accepts")

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max,
                                                                                       strict=True))


class Manifest(Model):
    format: int = Field(MANIFEST_FORMAT, description="manifest layout version")
    engine_file: str = Field(..., description="engine file name (same folder as the manifest)")
    engine_sha256: str = Field(..., min_length=64, max_length=64, description="sha256 of the engine bytes")
    engine_bytes: int = Field(..., gt=0, description="engine size; a shorter file is a partial write")
    onnx_file: str = Field(..., description="ONNX model the engine was built from (absolute path at build time)")
    onnx_sha256: str = Field(..., description="sha256 of that ONNX model")
    runtime: Literal["tensorrt", "tensorrt-rtx"] = Field(..., description="library that built the engine")
    trt_version: str = Field(..., description="TensorRT (or TensorRT-RTX) version that built the engine")
    gpu_name: str = Field(..., description="GPU the engine was built on, or the target for ahead-of-time builds")
    compute_capability: str = Field(..., description="compute capability the engine runs on, e.g. '8.7'")
    jetpack: str | None = Field(None, description="JetPack release of the build host, when it is a Jetson")
    l4t: str | None = Field(None, description="L4T release of the build host, when it is a Jetson")
    precision: Literal["fp32", "fp16", "int8"] = Field(..., description="requested precision")
    int8_mode: Literal["none", "qdq", "calibrated"] = Field("none", description="how INT8 scales were obtained")
    profiles: list[ProfileSpec] = Field(..., min_length=1, description="optimisation profiles, in engine order")
    workspace_mb: int = Field(..., description="workspace memory-pool limit used for the build")
    build_seconds: float = Field(..., ge=0, description="wall time of build_serialized_network")
    built_at: str = Field(..., description="UTC time of the build, ISO 8601")
    build_host: str = Field(..., description="host name of the build machine")


def manifest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, rename: readers see the old file or the whole new one.
    The file is 0644 (world-readable, like a plain write under the usual umask 022)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600: the service's own user must be able to read what tools write
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable (power loss on the line)
    finally:
        os.close(dir_fd)


def write_engine(engine: Path, data: bytes, manifest: Manifest) -> None:
    """Engine first, manifest last: a manifest on disk always describes a complete engine."""
    atomic_write(engine, data)
    atomic_write(manifest_path(engine), manifest.model_dump_json(indent=2).encode())


def read_manifest(engine: Path) -> Manifest:
    path = manifest_path(engine)
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ModelError(f"engine {engine.name}: no manifest {path.name} beside it; rebuild with "
                         f"`inspectd build-engine`") from None
    except (ValidationError, ValueError) as e:
        raise ModelError(f"engine {engine.name}: manifest {path} is unreadable: {e}") from None


def verified_engine_bytes(engine: Path, manifest: Manifest) -> bytes:
    """The engine's bytes, only if they are exactly what the manifest describes."""
    try:
        data = engine.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"engine file missing: {engine}") from None
    if not data:
        raise ModelError(f"engine {engine} is empty (0 bytes): an interrupted build or copy")
    if len(data) != manifest.engine_bytes:
        raise ModelError(f"engine {engine} is {len(data)} bytes, manifest says {manifest.engine_bytes}: "
                         f"partial or foreign file")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.engine_sha256:
        raise ModelError(f"engine {engine} sha256 {digest[:12]}… does not match its manifest "
                         f"({manifest.engine_sha256[:12]}…): modified or foreign file, refusing to load it")
    return data


@dataclass(frozen=True)
class HostInfo:
    """What the loading machine offers; compared with the manifest."""

    runtime: str
    trt_version: str
    compute_capability: str
    gpu_name: str = ""


class Action(str, Enum):
    LOAD = "load"
    REBUILD = "rebuild"
    REFUSE = "refuse"


@dataclass(frozen=True)
class EngineDecision:
    action: Action
    reasons: list[str] = field(default_factory=list)
    data: bytes | None = None  # verified engine bytes when action is LOAD

    def message(self) -> str:
        return "; ".join(self.reasons)


def compatibility_problems(manifest: Manifest, host: HostInfo, onnx_sha256: str | None) -> list[str]:
    """Why this engine must not run here; empty when it may."""
    problems = []
    if manifest.runtime != host.runtime:
        problems.append(f"built with {manifest.runtime}, this host runs {host.runtime}")
    # Engines are tied to the exact TensorRT build (no version-compatible flag is used).
    if manifest.trt_version != host.trt_version:
        problems.append(f"built with TensorRT {manifest.trt_version}, this host has {host.trt_version}")
    if manifest.compute_capability != host.compute_capability:
        problems.append(f"built for compute capability {manifest.compute_capability} ({manifest.gpu_name}), "
                        f"this GPU is {host.compute_capability} ({host.gpu_name or 'unknown'})")
    if onnx_sha256 is not None and manifest.onnx_sha256 != onnx_sha256:
        problems.append(f"the ONNX model changed since the build (sha256 {onnx_sha256[:12]}… now, "
                        f"{manifest.onnx_sha256[:12]}… at build time)")
    return problems


def decide(engine: Path, host: HostInfo, onnx: Path | None, allow_rebuild: bool) -> EngineDecision:
    """Load, rebuild or refuse. Never raises for a bad engine file: a 0-byte, partial, foreign or stale
    engine becomes REBUILD (when allowed and the ONNX is there) or REFUSE with the reason."""
    reasons: list[str] = []
    data = None
    try:
        manifest = read_manifest(engine)
        data = verified_engine_bytes(engine, manifest)
        onnx_sha = sha256_file(onnx) if onnx is not None and onnx.is_file() else None
        reasons = compatibility_problems(manifest, host, onnx_sha)
    except ModelError as e:
        reasons = [str(e) if engine.exists() else f"no engine at {engine}"]
    if not reasons:
        return EngineDecision(Action.LOAD, [], data)
    can_rebuild = allow_rebuild and onnx is not None and onnx.is_file() and onnx.stat().st_size > 0
    if can_rebuild:
        return EngineDecision(Action.REBUILD, reasons)
    hint = ("rebuild disabled (backend.rebuild: false)" if onnx is not None and onnx.is_file()
            else "no ONNX model to rebuild from")
    return EngineDecision(Action.REFUSE, [*reasons, hint])
