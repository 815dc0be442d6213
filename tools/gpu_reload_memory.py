#!/usr/bin/env python3
"""Memory of the real daemon across repeated SIGHUP reloads: does it stay flat?

    python3 tools/gpu_reload_memory.py [--variant gpu|cpu] [--reloads 30] [--settle 5] [--out DIR]

Starts `python3 -m inspectd.cli run` on the demo model and synthetic camera (variant gpu: ONNX Runtime's CUDA
provider and `preprocess: gpu`; cpu: the CPU provider and OpenCV preprocessing), waits for READY on a
NOTIFY_SOCKET, then sends SIGHUP `--reloads` times while parts keep flowing. Each reload changes what the new
runtimes are built from, in turn: the recipe rewritten as it was (a plain rebuild), the model swapped between
FP32 and its FP16 variant (inspectd.engines.fp16), and (gpu) `cuda_graph` switched on or off. After each
`reloaded` log line and the retired runtime's `runtime_closed`, it samples the daemon process:
  device_mib   its GPU memory: nvidia-smi --query-compute-apps, matched by pid (in a PID namespace where the pid
               is not listed, the GPU's only compute process); unavailable without nvidia-smi or a GPU
  gpu_used_mib the whole GPU's memory.used (informative: other processes count too)
  rss_mib      VmRSS (/proc/PID/status)
  locked_mib   VmLck + VmPin: mlock()ed and long-term pinned pages. On the H200 (driver 580) both stayed 0 with
               pinned buffers allocated: the driver's page-locking (cuMemHostAlloc, cuMemHostRegister) is not
               accounted there, so this only checks that nothing mlock()s
  nvidia_maps_mib  the size of the process's mappings of /dev/nvidia* (/proc/PID/maps), where the driver maps
               what it hands out to the process (74 MiB on the H200, unchanged across reloads)
  threads, fds the process's threads and open file descriptors (a session or stream that is never released
               often keeps a thread or a descriptor too)
  journaled    rows in the verdict journal (SQLite, read-only): parts keep flowing during reloads
Writes a table to stdout, DIR/gpu_reload_memory_<variant>.json and .png (DIR: --out, else $OUT, else var/), and
the daemon's log to DIR/gpu_reload_memory_<variant>.log.

The rule (exit 1 when broken): sample 0 is taken after READY, sample i after reload i. The first `--settle`
reloads let allocator caches, cuDNN workspaces and the malloc arenas settle; the baseline of each metric is its
largest value over samples 0..settle. Every later sample must stay within baseline + tolerance (TOLERANCES, or
--tol NAME=VALUE). A metric that cannot be read here is reported as unavailable and not judged. Also exit 1 when
the daemon said it could not free something: pycuda's "could not be cleaned up" warning on its stderr, or an
`ort_session_still_referenced` log line (a session kept alive past its backend's close).
Exit 2 when the run itself went wrong: the daemon did not start or died, a reload timed out (or all were
rejected), parts stopped flowing during a reload, or after the stop not every part had exactly one verdict in the
journal. A rejected reload (the old runtimes keep running) is reported and still sampled: the runtimes it built
were closed at once and must have given back what they took.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_models import station_for  # noqa: E402

from tests.supervise_harness import DaemonProcess, NotifySocket, journal_rows  # noqa: E402

MODEL = ROOT / "engines" / "demo_disc.onnx"
START_S = 300.0  # first start on a GPU: cuDNN's exhaustive search and the nvcc compile of the kernel
RELOAD_S = 180.0  # one reload: sessions built, self-checked, warmed (CUDA graph captured), golden-checked
CLOSE_S = 60.0  # the retired runtime closed once its parts have drained
# Allowed growth over the baseline, per metric (MiB, or a count). Device memory: ONNX Runtime's arena and the
# driver hand out memory in 2 MiB pages and larger chunks; one leaked CUDA session of the demo model is far more.
TOLERANCES: dict[str, float] = {"device_mib": 32.0, "rss_mib": 64.0, "locked_mib": 4.0, "nvidia_maps_mib": 32.0,
                                "threads": 2, "fds": 4}
JUDGED = tuple(TOLERANCES)


# ------------------------------------------------------------------------------------------------ reading
def proc_status(pid: int) -> dict[str, int]:
    """kB fields (VmRSS, VmLck, VmPin, ...) and Threads from /proc/PID/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        words = value.split()
        if words and words[0].isdigit() and (key.startswith("Vm") or key == "Threads"):
            out[key] = int(words[0])
    return out


def nvidia_maps_kib(pid: int) -> int:
    """Total size of the process's mappings of /dev/nvidia* device files, in KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/dev/nvidia"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            total += end - start
    return total // 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def parse_compute_apps(text: str) -> dict[int, float]:
    """`nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` -> {pid: MiB}, summed
    over GPUs (a process holding several). Lines it cannot read ('[N/A]' memory, say) are left out."""
    out: dict[int, float] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            continue
        try:
            pid, mib = int(parts[0]), float(parts[1])
        except ValueError:
            continue
        out[pid] = out.get(pid, 0.0) + mib
    return out


@dataclass
class GpuReading:
    device_mib: float | None  # the process's GPU memory
    gpu_used_mib: float | None  # the whole GPU's memory.used (all GPUs summed)
    source: str  # where device_mib came from, or why it is unavailable


def _smi(args: Sequence[str], smi: str) -> str:
    return subprocess.run([smi, *args], capture_output=True, text=True, timeout=30, check=True).stdout


def read_gpu(pid: int, smi: str | None = "nvidia-smi") -> GpuReading:
    path = shutil.which(smi) if smi else None
    if path is None:
        return GpuReading(None, None, f"unavailable: {smi or 'nvidia-smi'} not found")
    try:
        apps = parse_compute_apps(_smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                       path))
        used = sum(float(x) for x in _smi(["--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                          path).split())
    except (subprocess.SubprocessError, OSError, ValueError) as e:
        return GpuReading(None, None, f"unavailable: nvidia-smi failed: {e}")
    if pid in apps:
        return GpuReading(apps[pid], used, "nvidia-smi, by pid")
    if len(apps) == 1:  # in a container nvidia-smi lists host pids: the GPU's only compute process is ours
        return GpuReading(next(iter(apps.values())), used, "nvidia-smi, the GPU's only compute process")
    return GpuReading(None, used, f"unavailable: pid {pid} not among nvidia-smi's compute processes {sorted(apps)}")


def journaled(path: Path) -> int:
    """Rows in the verdict journal, read-only beside the daemon's writer (SQLite WAL)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM verdicts").fetchone()[0])
    finally:
        db.close()


@dataclass
class Sample:
    reload: int  # 0: after READY, before any reload
    step: str  # what the reload changed
    model: str  # fp32 | fp16
    cuda_graph: bool | None  # None: the CPU variant
    t_s: float  # since READY
    device_mib: float | None
    gpu_used_mib: float | None
    rss_mib: float
    locked_mib: float
    vm_lck_kib: int
    vm_pin_kib: int
    nvidia_maps_mib: float
    threads: int
    fds: int
    journaled: int


def sample(pid: int, journal: Path, smi: str | None, **what: Any) -> tuple[Sample, str]:
    st = proc_status(pid)
    gpu = read_gpu(pid, smi)
    lck, pin = st.get("VmLck", 0), st.get("VmPin", 0)
    return Sample(device_mib=gpu.device_mib, gpu_used_mib=gpu.gpu_used_mib, rss_mib=st.get("VmRSS", 0) / 1024,
                  locked_mib=(lck + pin) / 1024, vm_lck_kib=lck, vm_pin_kib=pin,
                  nvidia_maps_mib=nvidia_maps_kib(pid) / 1024, threads=st.get("Threads", 0), fds=open_fds(pid),
                  journaled=journaled(journal), **what), gpu.source


# ------------------------------------------------------------------------------------------------ the rule
@dataclass
class Judgement:
    metric: str
    baseline: float | None  # max over samples 0..settle
    worst: float | None  # max over the later samples
    tolerance: float
    slope_per_reload: float | None  # least squares over the later samples (informative)
    ok: bool | None  # None: unavailable, not judged
    note: str = ""


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def judge(series: Sequence[float | None], settle: int, tolerance: float, metric: str = "") -> Judgement:
    """The rule: every sample after index `settle` within max(series[0..settle]) + tolerance."""
    if len(series) <= settle + 1:
        raise ValueError(f"need more than {settle + 1} samples to judge (got {len(series)}): raise --reloads")
    if any(v is None for v in series):
        return Judgement(metric, None, None, tolerance, None, None, "unavailable")
    values = [float(v) for v in series]  # type: ignore[arg-type]
    base, later = max(values[:settle + 1]), values[settle + 1:]
    worst = max(later)
    xs = list(range(settle + 1, len(values)))
    return Judgement(metric, base, worst, tolerance, _slope(xs, later), worst <= base + tolerance)


# ------------------------------------------------------------------------------------------------ the station
@dataclass
class Station:
    folder: Path
    variant: str
    models: dict[str, Path]  # fp32 / fp16
    graphs: bool = True  # gpu: switch cuda_graph on and off between reloads
    model: str = "fp32"
    cuda_graph: bool = False
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.path = station_for(self.models["fp32"], self.folder)
        st = yaml.safe_load(self.path.read_text())
        st["camera"] = {**st["camera"], "bank": 16}
        st["cycle_budget_ms"] = 2000  # a fail-safe here means a fault, not a slow shared machine
        st["log"] = {"every_part": False}
        self.station = st
        self.write()

    @property
    def recipe(self) -> Path:
        return self.folder / "products" / "disc-a.yaml"

    def write(self) -> None:
        st = self.station
        if self.variant == "gpu":
            st["backend"] = {"type": "onnxruntime", "intra_op_threads": 1,
                             "providers": [{"name": "cuda", "cuda_graph": self.cuda_graph}]}
            st["preprocess"] = "gpu"
        else:
            st["backend"] = {"type": "onnxruntime", "intra_op_threads": 1, "providers": ["cpu"]}
            st["preprocess"] = "cpu"
        self.path.write_text(yaml.safe_dump(st, sort_keys=False))
        product = yaml.safe_load(self.recipe.read_text())
        product["model"]["path"] = str(self.models[self.model])
        self.recipe.write_text(yaml.safe_dump(product, sort_keys=False))

    def step(self, i: int) -> str:
        """What reload i changes: rewrite as is, swap the model, switch the CUDA graph, swap the model."""
        kind = ("rewrite", "model", "graph", "model")[(i - 1) % 4]
        if kind == "graph" and (self.variant != "gpu" or not self.graphs):
            kind = "rewrite"
        if kind == "model":
            self.model = "fp16" if self.model == "fp32" else "fp32"
        elif kind == "graph":
            self.cuda_graph = not self.cuda_graph
        self.write()
        return f"{kind}: {self.model}" + (f", cuda_graph={self.cuda_graph}" if self.variant == "gpu" else "")


# ------------------------------------------------------------------------------------------------ the run
class RunFailed(Exception):
    """The run went wrong (not the memory): exit 2."""


def _wait(cond: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if not alive():
            return cond()
        time.sleep(0.05)
    return cond()


@dataclass
class Report:
    variant: str
    reloads: int
    settle: int
    device_source: str
    samples: list[Sample]
    judgements: list[Judgement]
    verdicts: dict[str, Any]  # every part one verdict: the stop's counts against the journal's rows
    problems: list[str]  # the run's own failures (exit 2)
    rejected: list[dict[str, Any]]  # reloads the daemon refused (old runtimes kept): reported, still sampled
    leaks: list[str]  # what the daemon itself said it could not free
    rule: str

    @property
    def flat(self) -> bool:
        return all(j.ok is not False for j in self.judgements) and not self.leaks

    @property
    def exit_code(self) -> int:
        return 2 if self.problems else 0 if self.flat else 1


RULE = ("baseline = max over samples 0..settle (0: after READY; i: after reload i and the close of the runtime it "
        "retired); every later sample <= baseline + tolerance; unavailable metrics are not judged; no free the "
        "daemon reported it could not make")


def check_verdicts(journal: Path, stopped: dict | None) -> tuple[dict[str, Any], list[str]]:
    """Every part the daemon took has exactly one journal row: seq 1..n once each, n = parts_in = verdicts."""
    rows = journal_rows(journal)
    seqs = [r["seq"] for r in rows]
    info: dict[str, Any] = {"rows": len(rows), "distinct_seq": len(set(seqs)),
                            "models": sorted({r["model_sha256"][:12] for r in rows}),
                            "outcomes": {v: sum(r["verdict"] == v for r in rows) for v in {r["verdict"] for r in rows}},
                            "failsafe_reasons": sorted({r["reason"] for r in rows if r["verdict"] == "failsafe"})}
    problems = []
    if stopped is None:
        problems.append("no `stopped` log line: the daemon did not stop in order")
    else:
        info.update({k: stopped.get(k) for k in ("parts_in", "verdicts", "journaled", "journal_dropped")})
        if not (stopped["parts_in"] == stopped["verdicts"] == stopped["journaled"] == len(rows)):
            problems.append(f"parts_in {stopped['parts_in']}, verdicts {stopped['verdicts']}, journaled "
                            f"{stopped['journaled']}, journal rows {len(rows)}: not one verdict per part")
    if seqs != list(range(1, len(rows) + 1)):
        problems.append("journal seqs are not 1..n, once each")
    return info, problems


def run(variant: str, reloads: int, settle: int, folder: Path, tolerances: dict[str, float],
        smi: str | None = "nvidia-smi", rate_hz: float = 50.0, log: Path | None = None, graphs: bool = True) -> Report:
    models = {"fp32": MODEL}
    from inspectd.engines.fp16 import convert_fp16

    models["fp16"] = convert_fp16(MODEL, folder / "demo_disc.fp16.onnx").out
    station = Station(folder, variant, models, graphs)
    station.station["camera"]["rate_hz"] = rate_hz
    station.write()
    journal = folder / "j.sqlite"
    notify = NotifySocket(folder)
    daemon = DaemonProcess(station.path, notify, env={"PYTHONUNBUFFERED": "1"})
    samples: list[Sample] = []
    problems: list[str] = []
    rejected: list[dict[str, Any]] = []
    source = ""
    stopped = None
    try:
        if notify.wait_for(lambda m: m.has("READY"), START_S, daemon.alive, since=0) is None:
            raise RunFailed(f"no READY within {START_S:.0f} s (exit {daemon.proc.poll()})")
        t0 = time.monotonic()
        _wait(lambda: journaled(journal) > 0, 60, daemon.alive)
        s, source = sample(daemon.pid, journal, smi, reload=0, step="start", model=station.model,
                           cuda_graph=station.cuda_graph if variant == "gpu" else None, t_s=0.0)
        samples.append(s)
        print(_head(), flush=True)
        print(_row(s), flush=True)
        applied = 0
        for i in range(1, reloads + 1):
            step = station.step(i)
            daemon.signal(signal.SIGHUP)
            if not _wait(lambda i=i: len(daemon.events("reloaded")) + len(daemon.events("reload_rejected")) >= i,
                         RELOAD_S, daemon.alive):
                raise RunFailed(f"reload {i} ({step}): no `reloaded` nor `reload_rejected` within {RELOAD_S:.0f} s")
            if len(refused := daemon.events("reload_rejected")) > len(rejected):
                # Kept as a sample: the refused runtimes were closed at once, and must have given back what they
                # took like any other (a refused CUDA graph capture, say).
                problem = " | ".join(refused[-1].get("problems") or [])
                rejected.append({"reload": i, "step": step, "problem": problem[:400]})
                step += " REJECTED"
            else:
                applied += 1
                if not _wait(lambda n=applied: len(daemon.events("runtime_closed")) >= n, CLOSE_S, daemon.alive):
                    raise RunFailed(f"reload {i}: the retired runtime was not closed within {CLOSE_S:.0f} s")
            s, source = sample(daemon.pid, journal, smi, reload=i, step=step, model=station.model,
                               cuda_graph=station.cuda_graph if variant == "gpu" else None,
                               t_s=time.monotonic() - t0)
            if s.journaled <= samples[-1].journaled:
                problems.append(f"reload {i}: no part journaled since the previous sample ({s.journaled})")
            samples.append(s)
            print(_row(s), flush=True)
        if rejected and len(rejected) == reloads:
            problems.append("every reload was rejected: nothing was rebuilt")
    except RunFailed as e:
        problems.append(str(e))
    finally:
        if daemon.alive():  # an ordered stop, also after a failure: the verdicts are still accounted for
            daemon.signal(signal.SIGTERM)
            try:
                rc = daemon.wait(120)
                if rc != 0:
                    problems.append(f"daemon exited {rc} on SIGTERM")
            except subprocess.TimeoutExpired:
                problems.append("daemon did not stop within 120 s of SIGTERM")
        else:
            problems.append(f"daemon died (exit {daemon.proc.poll()})")
        stopped = daemon.wait_event("stopped", 5)
        daemon.kill()
        notify.close()
        if log is not None:
            log.write_text("".join(daemon.out) + "\n--- stderr ---\n" + daemon.stderr())
    # Leaks the samples may be too coarse to see: pycuda skipping a free it could not make (its warning goes to
    # stderr), a session still referenced when its backend closed (the backend logs it and keeps its stream).
    leaks = [line.strip()[:300] for line in daemon.stderr().splitlines() if "could not be cleaned up" in line]
    leaks += [f"session still referenced at close: {e.get('product')} {e.get('model')}"
              for e in daemon.events("ort_session_still_referenced")]
    verdicts: dict[str, Any] = {}
    if stopped is not None or journal.exists():
        verdicts, bad = check_verdicts(journal, stopped)
        problems.extend(bad)
    judgements = []
    if len(samples) > settle + 1:
        judgements = [judge([getattr(s, m) for s in samples], settle, tolerances[m], m) for m in JUDGED]
    elif not problems:
        problems.append(f"{len(samples)} samples: need more than settle + 1 = {settle + 1}")
    return Report(variant, reloads, settle, source, samples, judgements, verdicts, problems, rejected, leaks, RULE)


# ------------------------------------------------------------------------------------------------ output
_COLS = (("reload", 6, "d"), ("device_mib", 10, ".1f"), ("gpu_used_mib", 12, ".0f"), ("rss_mib", 8, ".1f"),
         ("locked_mib", 10, ".2f"), ("nvidia_maps_mib", 15, ".1f"), ("threads", 7, "d"), ("fds", 4, "d"),
         ("journaled", 9, "d"))


def _head() -> str:
    return " ".join(f"{name:>{w}}" for name, w, _ in _COLS) + "  step"


def _row(s: Sample) -> str:
    cells = []
    for name, w, fmt in _COLS:
        v = getattr(s, name)
        cells.append(f"{'n/a':>{w}}" if v is None else f"{v:>{w}{fmt}}")
    return " ".join(cells) + f"  {s.step}"


def summary(r: Report) -> str:
    lines = [f"rule: {r.rule}; settle = {r.settle}", f"device memory: {r.device_source}"]
    for j in r.judgements:
        if j.ok is None:
            lines.append(f"  {j.metric:16} unavailable, not judged")
            continue
        slope = "" if j.slope_per_reload is None else f", slope {j.slope_per_reload:+.3f}/reload"
        lines.append(f"  {j.metric:16} baseline {j.baseline:.2f}, worst later {j.worst:.2f}, tolerance "
                     f"{j.tolerance:g}{slope}: {'flat' if j.ok else 'GREW'}")
    if r.verdicts:
        lines.append(f"verdicts: {json.dumps(r.verdicts)}")
    for rej in r.rejected:
        lines.append(f"REJECTED reload {rej['reload']} ({rej['step']}): {rej['problem'][:200]}")
    if any("capture" in rej["problem"] for rej in r.rejected):
        lines.append("  (a CUDA graph capture broke while the pipeline ran: the capture gate should prevent it, "
                     "README 'ONNX Runtime on the GPU'; --no-graph leaves cuda_graph off)")
    lines += [f"LEAK: {leak}" for leak in r.leaks]
    lines += [f"PROBLEM: {p}" for p in r.problems]
    lines.append({0: "memory flat", 1: "memory GREW beyond the rule", 2: "run failed"}[r.exit_code])
    return "\n".join(lines)


def plot(r: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [s.reload for s in r.samples]
    panels = (("GPU memory of the process (MiB)", ("device_mib",)), ("host memory (MiB)", ("rss_mib",)),
              ("page-locked host (MiB)", ("locked_mib", "nvidia_maps_mib")), ("parts journaled", ("journaled",)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 9), sharex=True)
    for ax, (title, metrics) in zip(axes, panels, strict=True):
        for m in metrics:
            ys = [getattr(s, m) for s in r.samples]
            if all(y is not None for y in ys):
                ax.plot(xs, ys, marker=".", label=m)
            else:
                ax.text(0.5, 0.5, f"{m}: unavailable", transform=ax.transAxes, ha="center")
        ax.axvline(r.settle + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=9)
        if len(metrics) > 1:
            ax.legend(fontsize=7)
    axes[-1].set_xlabel(f"reload (dotted: end of the {r.settle} settling reloads)")
    fig.suptitle(f"inspectd across SIGHUP reloads ({r.variant})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(r: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    js = out / f"gpu_reload_memory_{r.variant}.json"
    doc = {**asdict(r), "exit_code": r.exit_code, "flat": r.flat}
    js.write_text(json.dumps(doc, indent=2))
    written = [js]
    if len(r.samples) > 1:
        png = out / f"gpu_reload_memory_{r.variant}.png"
        try:
            plot(r, png)
            written.append(png)
        except ImportError as e:  # matplotlib is a dependency; a bare machine may still lack it
            print(f"no plot: {e}", file=sys.stderr)
    return written


def _tolerances(pairs: Sequence[str]) -> dict[str, float]:
    tol = dict(TOLERANCES)
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in tol:
            raise SystemExit(f"--tol {pair}: metric must be one of {', '.join(tol)}")
        tol[name] = float(value)
    return tol


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--reloads", type=int, default=30)
    ap.add_argument("--settle", type=int, default=5, help="reloads before the baseline is fixed")
    ap.add_argument("--rate-hz", type=float, default=50.0, help="synthetic camera's part rate")
    ap.add_argument("--no-graph", dest="graphs", action="store_false",
                    help="gpu: leave cuda_graph off (README: a CUDA graph captured by a reload shares the GPU with "
                         "the running pipeline)")
    ap.add_argument("--tol", action="append", default=[], metavar="METRIC=VALUE",
                    help=f"override a tolerance (defaults {TOLERANCES})")
    ap.add_argument("--nvidia-smi", default="nvidia-smi", help="nvidia-smi to query (a missing one: unavailable)")
    ap.add_argument("--out", type=Path, default=None, help="default $OUT if set, else var/")
    args = ap.parse_args(argv)
    if args.reloads <= args.settle:
        ap.error(f"--reloads ({args.reloads}) must be more than --settle ({args.settle})")
    out = args.out or Path(os.environ.get("OUT") or ROOT / "var")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reloadmem-") as tmp:
        report = run(args.variant, args.reloads, args.settle, Path(tmp), _tolerances(args.tol), args.nvidia_smi,
                     args.rate_hz, log=out / f"gpu_reload_memory_{args.variant}.log", graphs=args.graphs)
    print(summary(report), flush=True)
    for p in write(report, out):
        print(f"wrote {p}", flush=True)
    return report.exit_code


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
