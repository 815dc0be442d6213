"""Accuracy, confusion matrix, AUROC and inference latency of models on a labelled image folder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspectd.decide import decide
from inspectd.engines.roc import auroc, roc_curve
from inspectd.pipeline.runtime import ProductRuntime
from inspectd.types import Frame

LABELS = ("pass", "reject")


@dataclass(frozen=True)
class Miss:
    """A misclassified image: what it should have been, what the model made of it, and its heatmap if any."""

    frame: Frame
    truth: str
    verdict: str
    score: float
    scores: dict[str, float]
    heatmap: np.ndarray | None


@dataclass
class EvalResult:
    name: str  # model file
    backend: str
    precision: str
    confusion: np.ndarray  # rows: truth pass/reject; columns: verdict pass/reject
    latency_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # misclassified files
    scores: list[float] = field(default_factory=list)  # deciding score per labelled part (decide's)
    truths: list[str] = field(default_factory=list)  # pass / reject, same order
    rejected: list[bool] = field(default_factory=list)  # the verdict, same order
    files: list[str] = field(default_factory=list)
    threshold: float = float("nan")  # where the recipe's first rule rejects, in score units
    misses: list[Miss] = field(default_factory=list)  # the misclassified images themselves (see engines/misses)

    @property
    def auroc(self) -> float:
        return auroc(np.array(self.scores), np.array(self.truths) == "reject")

    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return roc_curve(np.array(self.scores), np.array(self.truths) == "reject")

    @property
    def recall(self) -> float:
        """Defective parts rejected / defective parts."""
        return float(self.confusion[1, 1] / self.confusion[1].sum()) if self.confusion[1].sum() else float("nan")

    @property
    def specificity(self) -> float:
        """Good parts passed / good parts."""
        return float(self.confusion[0, 0] / self.confusion[0].sum()) if self.confusion[0].sum() else float("nan")

    def recall_by_kind(self, kinds: dict[str, str]) -> dict[str, tuple[int, int]]:
        """defect kind -> (rejected, parts), from labels.csv's kind column."""
        out: dict[str, list[int]] = {}
        for f, t, r in zip(self.files, self.truths, self.rejected, strict=True):
            kind = kinds.get(f)
            if t == "reject" and kind:
                n = out.setdefault(kind, [0, 0])
                n[0] += int(r)
                n[1] += 1
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    @property
    def images(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.images) if self.images else 0.0

    def p(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else float("nan")


def evaluate(runtime: ProductRuntime, frames: Sequence[Frame], *, precision: str, repeat: int = 1,
             warmup: int = 3) -> EvalResult:
    """Accuracy from one pass over `frames`; latency of backend.infer over `repeat` passes after a warm-up
    (preprocessing is the same for every backend, so it is left out of the figure)."""
    labelled = [f for f in frames if f.truth in LABELS]
    if not labelled:
        raise ValueError("no labelled images (need pass/ and reject/ sub-folders or labels.csv)")
    result = EvalResult(runtime.product.model.path.name, runtime.backend.name, precision, np.zeros((2, 2), int),
                        threshold=runtime.product.threshold(runtime.product.rules[0]))
    tensors = [np.array(runtime.preprocess(f), copy=True) for f in labelled]
    for t in tensors[:warmup]:
        runtime.backend.infer(t)
    for lap in range(repeat):
        for frame, tensor in zip(labelled, tensors, strict=True):
            t0 = time.perf_counter()
            outputs = runtime.backend.infer(tensor)
            result.latency_ms.append((time.perf_counter() - t0) * 1e3)
            if lap:
                continue
            findings = runtime.postprocess(outputs)
            decision = decide(findings, runtime.product)
            verdict = decision.outcome.value
            result.confusion[LABELS.index(frame.truth), LABELS.index(verdict)] += 1
            result.scores.append(decision.score)
            result.truths.append(str(frame.truth))
            result.rejected.append(verdict == "reject")
            result.files.append(str(frame.meta.get("file", "?")))
            if verdict != frame.truth:
                result.errors.append(f"{frame.meta.get('file', '?')}: truth {frame.truth}, got {verdict}")
                heat = findings.extra.get("heatmap")
                result.misses.append(Miss(frame, str(frame.truth), verdict, decision.score, dict(findings.scores),
                                          None if heat is None else np.array(heat, np.float32, copy=True)))
    return result


def table(results: Sequence[EvalResult]) -> str:
    head = (f"{'model':<28}{'backend':<13}{'precision':<10}{'accuracy':>9}{'AUROC':>8}{'recall':>8}{'spec.':>8}"
            f"{'p50 ms':>9}{'p99 ms':>9}  confusion")
    lines = [head, "-" * len(head)]
    for r in results:
        (tp_, fr), (fp_, tr) = r.confusion  # truth pass -> pass/reject, truth reject -> pass/reject
        lines.append(f"{r.name[:27]:<28}{r.backend:<13}{r.precision:<10}{100 * r.accuracy:>8.2f}%"
                     f"{r.auroc:>8.4f}{r.recall:>8.4f}{r.specificity:>8.4f}{r.p(50):>9.3f}{r.p(99):>9.3f}"
                     f"  pass→pass {tp_} pass→reject {fr} "
                     f"reject→pass {fp_} reject→reject {tr}")
    return "\n".join(lines)


def plot(results: Sequence[EvalResult], path: Path) -> Path:
    """Accuracy, latency (p50 bar, p99 whisker), ROC curves, the threshold sweep and confusion matrices side by
    side, one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: edge boxes and CI have no display
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(1, 4 + n, figsize=(4 * (4 + n), 3.6), constrained_layout=True)
    labels = [f"{r.backend}\n{r.precision}" for r in results]
    x = np.arange(n)
    acc = [100 * r.accuracy for r in results]
    axes[0].bar(x, acc, color="tab:blue")
    axes[0].set_ylim(max(0.0, min(acc) - 5), 100.5)
    axes[0].set_xticks(x, labels)
    axes[0].set_ylabel("accuracy (%)")
    for i, a in enumerate(acc):
        axes[0].annotate(f"{a:.2f}", (i, a), ha="center", va="bottom", fontsize=8)
    p50 = np.array([r.p(50) for r in results])
    p99 = np.array([r.p(99) for r in results])
    axes[1].bar(x, p50, color="tab:orange", label="p50")
    axes[1].errorbar(x, p50, yerr=[np.zeros(n), p99 - p50], fmt="none", ecolor="black", capsize=6, label="p99")
    axes[1].set_xticks(x, labels)
    axes[1].set_ylabel("inference latency (ms)")
    axes[1].legend()
    roc_and_sweep(results, labels, axes[2], axes[3])
    for ax, r, label in zip(axes[4:], results, labels, strict=True):
        ax.imshow(r.confusion, cmap="Blues")
        for (i, j), v in np.ndenumerate(r.confusion):
            dark = v > r.confusion.max() / 2
            ax.text(j, i, str(v), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks([0, 1], ["pass", "reject"])
        ax.set_yticks([0, 1], ["pass", "reject"])
        ax.set_xlabel("verdict")
        ax.set_ylabel("truth")
        ax.set_title(label.replace("\n", " "), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_and_sweep(results: Sequence[EvalResult], labels: Sequence[str], ax_roc, ax_sweep) -> None:
    """ROC curve per model (AUROC in the legend) and recall / specificity against the threshold, with the
    recipe's threshold marked: what moving it would do on these parts."""
    for i, (r, label) in enumerate(zip(results, labels, strict=True)):
        colour = f"C{i}"
        fpr, tpr, _ = r.roc()
        ax_roc.step(fpr, tpr, where="post", color=colour, label=f"{label.replace(chr(10), ' ')} {r.auroc:.4f}")
        s, y = np.array(r.scores), np.array(r.truths) == "reject"
        grid = np.unique(s)
        if grid.size:
            ax_sweep.plot(grid, [(s[y] >= t).mean() if y.any() else np.nan for t in grid], color=colour,
                          label="recall" if i == 0 else None)
            ax_sweep.plot(grid, [(s[~y] < t).mean() if (~y).any() else np.nan for t in grid], color=colour,
                          linestyle="--", label="specificity" if i == 0 else None)
            ax_sweep.axvline(r.threshold, color=colour, linestyle=":", linewidth=1)
    ax_roc.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    ax_roc.set_xlabel("false positive rate (good parts rejected)")
    ax_roc.set_ylabel("true positive rate (defects rejected)")
    ax_roc.set_title("ROC (legend: AUROC)", fontsize=9)
    ax_roc.legend(fontsize=7, loc="lower right")
    ax_sweep.set_xlabel("threshold (score units; dotted: the recipe's)")
    ax_sweep.set_ylabel("share of parts")
    ax_sweep.set_title("threshold sweep", fontsize=9)
    ax_sweep.legend(fontsize=7)
