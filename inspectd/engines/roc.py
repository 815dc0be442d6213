"""Ranking figures of a model's deciding score on labelled parts: AUROC, the ROC curve, a threshold sweep.

The same numbers for a classifier (score = defect probability) and an anomaly recipe (score in its own
units), so both can be compared on the same parts.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random defective part scores above a random good one (ties count half):
    the Mann-Whitney U statistic over n_pos x n_neg. NaN without both kinds of part."""
    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average rank over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) for 'reject when score >= threshold', from the
    strictest threshold down; starts at (0, 0)."""
    s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
    thr = np.unique(s)[::-1]
    tpr = np.array([0.0, *((s[y][:, None] >= thr).mean(0) if y.any() else np.zeros(len(thr)))])
    fpr = np.array([0.0, *((s[~y][:, None] >= thr).mean(0) if (~y).any() else np.zeros(len(thr)))])
    return fpr, tpr, np.array([np.inf, *thr])


def read_kinds(folder: Path) -> dict[str, str]:
    """file -> defect kind from labels.csv's optional third column (tools/make_dataset.py writes it)."""
    path = folder / "labels.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {row[0].strip(): row[2].strip() for row in csv.reader(f) if len(row) >= 3 and row[0] != "file"}
