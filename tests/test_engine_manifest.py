"""Engine manifest: atomic writes, sha256 verification, and the load / rebuild / refuse decision."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from inspectd.engines.manifest import (
    Action,
    HostInfo,
    Manifest,
    ProfileSpec,
    atomic_write,
    decide,
    manifest_path,
    read_manifest,
    verified_engine_bytes,
    write_engine,
)
from inspectd.errors import ModelError
from inspectd.infer.base import sha256_file
from tests.onnx_models import brightness_model

HOST = HostInfo(runtime="tensorrt", trt_version="10.3.0.30", compute_capability="8.7", gpu_name="Orin")
ENGINE_BYTES = bytes(range(256)) * 64  # stands in for a serialized engine: only its bytes matter here


def _manifest(engine: Path, data: bytes, onnx: Path, **over) -> Manifest:
    fields = dict(engine_file=engine.name, engine_sha256=hashlib.sha256(data).hexdigest(), engine_bytes=len(data),
                  onnx_file=str(onnx), onnx_sha256=sha256_file(onnx), runtime="tensorrt", trt_version="10.3.0.30",
                  gpu_name="Orin", compute_capability="8.7", jetpack="6.0", l4t="36.3.0", precision="fp16",
                  profiles=[ProfileSpec(input="input", min=(1, 3, 224, 224), opt=(1, 3, 224, 224),
                                        max=(1, 3, 224, 224))],
                  workspace_mb=1024, build_seconds=1.5, built_at="2026-11-24T21:00:00Z", build_host="line3")
    fields.update(over)
    return Manifest(**fields)


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    onnx = brightness_model(tmp_path / "m.onnx")
    engine = tmp_path / "m.fp16.engine"
    write_engine(engine, ENGINE_BYTES, _manifest(engine, ENGINE_BYTES, onnx))
    return engine, onnx


def test_written_engine_verifies_and_loads(built):
    engine, onnx = built
    m = read_manifest(engine)
    assert manifest_path(engine).name == "m.fp16.engine.json"
    assert verified_engine_bytes(engine, m) == ENGINE_BYTES
    d = decide(engine, HOST, onnx, allow_rebuild=False)
    assert d.action is Action.LOAD and d.data == ENGINE_BYTES and d.reasons == []


def test_atomic_write_leaves_no_temp_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.engine"
    atomic_write(target, b"old")

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new-but-interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.engine"]  # temp file removed


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "partial or foreign"),
    (lambda p: p.write_bytes(b"\xff" + p.read_bytes()[1:]), "does not match its manifest"),
    (lambda p: p.unlink(), "no engine at"),
])
def test_damaged_engine_is_refused_without_rebuild_and_rebuilt_with(built, damage, message):
    engine, onnx = built
    damage(engine)
    refused = decide(engine, HOST, onnx, allow_rebuild=False)
    assert refused.action is Action.REFUSE and refused.data is None
    assert message in refused.message() and "rebuild disabled" in refused.message()
    rebuild = decide(engine, HOST, onnx, allow_rebuild=True)
    assert rebuild.action is Action.REBUILD and message in rebuild.message()


def test_verify_raises_model_error_for_tampered_bytes(built):
    engine, _ = built
    m = read_manifest(engine)
    engine.write_bytes(ENGINE_BYTES[::-1])  # same size, other content
    with pytest.raises(ModelError, match="modified or foreign"):
        verified_engine_bytes(engine, m)


def test_missing_or_corrupt_manifest_refuses(built):
    engine, onnx = built
    manifest_path(engine).write_text("{not json")
    d = decide(engine, HOST, onnx, allow_rebuild=False)
    assert d.action is Action.REFUSE and "unreadable" in d.message()
    manifest_path(engine).unlink()
    d = decide(engine, HOST, None, allow_rebuild=True)
    assert d.action is Action.REFUSE and "no manifest" in d.message() and "no ONNX model" in d.message()


@pytest.mark.parametrize("host, message", [
    (HostInfo("tensorrt", "10.4.0.26", "8.7", "Orin"), "built with TensorRT 10.3.0.30, this host has 10.4.0.26"),
    (HostInfo("tensorrt", "10.3.0.30", "7.5", "Tesla T4"), "compute capability 8.7 (Orin), this GPU is 7.5"),
    (HostInfo("tensorrt-rtx", "10.3.0.30", "8.7", "Orin"), "built with tensorrt, this host runs tensorrt-rtx"),
])
def test_version_or_gpu_mismatch(built, host, message):
    engine, onnx = built
    d = decide(engine, host, onnx, allow_rebuild=False)
    assert d.action is Action.REFUSE and message in d.message()
    assert decide(engine, host, onnx, allow_rebuild=True).action is Action.REBUILD


def test_changed_onnx_makes_engine_stale(built):
    engine, onnx = built
    brightness_model(onnx, threshold=0.5)  # same name, new weights
    d = decide(engine, HOST, onnx, allow_rebuild=False)
    assert d.action is Action.REFUSE and "ONNX model changed since the build" in d.message()


def test_manifest_rejects_unknown_keys_and_bad_sizes(built):
    engine, _ = built
    raw = manifest_path(engine).read_text().replace('"precision"', '"precison"')
    with pytest.raises(ValueError):
        Manifest.model_validate_json(raw)
    with pytest.raises(ValueError):
        _manifest(engine, b"", engine)  # engine_bytes must be > 0
