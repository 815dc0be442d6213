"""Test setup for the GenICam source: harvesters, the simulated producers, the fault proxy.

Everything lands in `.cache/genicam/` (git-ignored). TLSimu.cti and its libVirtualFG.so
come out of the genicam 1.5.0 wheel on PyPI (the last release that ships them; GenICam
licence: never commit them); viky.cti ships inside genicam >= 1.6. FaultShim.cti is
built here with cc from tests/genicam/faultshim.c. Each step skips the calling test
with its reason when it cannot be done here (no network to PyPI, no C compiler).
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "genicam"
HERE = Path(__file__).resolve().parent
# The [genicam] extra, as pyproject pins it; installed without deps (numpy comes from the venv).
EXTRA = ["harvesters==1.4.3", "genicam>=1.5.1,<1.7"]
TLSIMU_WHEEL = "genicam==1.5.0"
TLSIMU_FILES = ("TLSimu.cti", "libVirtualFG.so")


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=600)


@functools.cache
def harvesters_importable() -> None:
    """Make `import harvesters` work: the venv's copy, else one pip-installed into .cache/genicam/site."""
    site = CACHE / "site"
    if site.is_dir() and str(site) not in sys.path:
        sys.path.append(str(site))  # appended: the venv's own packages (numpy) keep precedence
    try:
        importlib.import_module("harvesters.core")
        return
    except ImportError:
        pass
    r = _pip("install", "-q", "--no-deps", "--target", str(site), *EXTRA)
    if r.returncode != 0:
        pytest.skip(f"harvesters/genicam not installed and pip could not fetch them: {r.stderr.strip()[-300:]}")
    if str(site) not in sys.path:
        sys.path.append(str(site))
    importlib.invalidate_caches()
    importlib.import_module("harvesters.core")


@functools.cache
def tlsimu() -> Path:
    """Path of TLSimu.cti (libVirtualFG.so beside it), fetched once."""
    dest = CACHE / "producers"
    cti = dest / "TLSimu.cti"
    if all((dest / f).is_file() for f in TLSIMU_FILES):
        return cti
    if platform.machine() != "x86_64":
        pytest.skip(f"TLSimu ships only in the x86_64 wheel of {TLSIMU_WHEEL}; this is {platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        r = _pip("download", TLSIMU_WHEEL, "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
                 "--platform", "manylinux2014_x86_64", "-d", tmp, "-q")
        wheels = list(Path(tmp).glob("genicam-1.5.0-*.whl"))
        if r.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {TLSIMU_WHEEL} for TLSimu.cti: {r.stderr.strip()[-300:]}")
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            for name in TLSIMU_FILES:
                path = dest / name
                path.write_bytes(z.read(f"genicam-1.5.0.data/purelib/genicam/{name}"))
                path.chmod(0o755)  # TLSimu.cti finds libVirtualFG.so through RPATH=$ORIGIN
    return cti


@functools.cache
def viky() -> Path:
    harvesters_importable()
    import genicam

    cti = Path(genicam.__file__).parent / "viky.cti"
    if not cti.is_file():
        pytest.skip(f"viky.cti ships with genicam >= 1.6; installed: {getattr(genicam, '__version__', '?')}")
    return cti


@functools.cache
def fault_shim() -> tuple[Path, Path]:
    """Build FaultShim.cti forwarding to TLSimu; returns (shim, control file).

    The shim reads GC_SHIM_TARGET / GC_SHIM_CTL once, when first loaded: they are set here,
    before any Harvester loads it, and stay for the whole test session.
    """
    target = tlsimu()
    cc = shutil.which("cc") or shutil.which("gcc")
    nm = shutil.which("nm")
    if cc is None or nm is None:
        pytest.skip("the fault proxy needs a C compiler and nm (Debian: gcc binutils libc6-dev)")
    out = CACHE / "shim"
    out.mkdir(parents=True, exist_ok=True)
    syms = subprocess.run([nm, "-D", "--defined-only", str(target)], capture_output=True, text=True,
                          check=True).stdout
    names = sorted({m.group(1) for m in re.finditer(r" T ((?:GC|TL|IF|Dev|DS|Event)[A-Z]\w*)$", syms, re.M)})
    (out / "forwards.h").write_text("".join(f"FWD({n})\n" for n in names))
    shim = out / "FaultShim.cti"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-I", str(out), "-o", str(shim),
                    str(HERE / "faultshim.c"), "-ldl"], check=True, capture_output=True, text=True)
    ctl = out / "ctl"
    ctl.write_bytes(b"\0" * 64)
    os.environ["GC_SHIM_TARGET"] = str(target)
    os.environ["GC_SHIM_CTL"] = str(ctl)
    return shim, ctl


class ShimControl:
    """Commands for a running FaultShim: faults (letters RSBE) and pixel-format relabelling."""

    CABLE_PULLED = "RSBE"

    def __init__(self, ctl: Path) -> None:
        self.ctl = ctl

    def set(self, faults: str = "", pixfmt: int = 0, width_div: int = 1) -> None:
        text = f"{faults}|{pixfmt:x}|{width_div}".encode()
        with self.ctl.open("r+b") as f:  # same inode: the shim has it mapped
            f.write(text.ljust(64, b"\0"))

    def clear(self) -> None:
        self.set()
