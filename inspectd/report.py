"""Shift report from the verdict journal: yield per product and hour, reject reasons, deadline misses,
latency percentiles, and a PNG (yield over time, latency histogram against the cycle budget).

Reads the journal read-only, so it can run beside the daemon while the line produces.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float, tz: timezone | None = None) -> float:
    """'now', '8h' / '30m' / '2d' (that long ago), or ISO 8601 ('2026-11-24 06:00'; local time unless it
    names an offset, or `tz` when given). Returns unix time."""
    text = text.strip()
    if text == "now":
        return now
    if m := _AGO.match(text):
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: use 'now', '8h', '30m', '2d' or '2026-11-24 06:00'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz) if tz is not None else dt.astimezone()
    return dt.timestamp()


@dataclass
class HourRow:
    parts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def yield_pct(self) -> float:
        return 100.0 * self.outcomes["pass"] / self.parts if self.parts else float("nan")


@dataclass
class Report:
    journal: Path
    since: float
    until: float
    budget_ms: float
    tz: timezone | None  # None: local time
    hours: dict[str, dict[float, HourRow]]  # product -> hour start (unix) -> counts
    reasons: Counter[tuple[str, str]]  # (verdict, reason) -> parts, rejects and fail-safes
    latency_ms: dict[str, np.ndarray]  # product -> latencies

    @property
    def parts(self) -> int:
        return sum(r.parts for hours in self.hours.values() for r in hours.values())

    @property
    def deadline_misses(self) -> int:
        return self.reasons[("failsafe", "deadline")]

    def when(self, t: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return datetime.fromtimestamp(t, self.tz).strftime(fmt) if self.tz else time.strftime(fmt, time.localtime(t))


def hour_start(t: float, tz: timezone | None) -> float:
    dt = datetime.fromtimestamp(t, tz) if tz else datetime.fromtimestamp(t).astimezone()
    return dt.replace(minute=0, second=0, microsecond=0).timestamp()


def open_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"journal not found: {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def build_report(journal: Path, since: float, until: float, budget_ms: float,
                 tz: timezone | None = None) -> Report:
    db = open_ro(journal)
    try:
        rows = db.execute("SELECT product, verdict, reason, latency_ms, t_verdict FROM verdicts "
                          "WHERE t_verdict >= ? AND t_verdict < ? ORDER BY t_verdict", (since, until)).fetchall()
    finally:
        db.close()
    hours: dict[str, dict[float, HourRow]] = defaultdict(dict)
    reasons: Counter[tuple[str, str]] = Counter()
    latency: dict[str, list[float]] = defaultdict(list)
    for product, verdict, reason, latency_ms, t in rows:
        row = hours[product].setdefault(hour_start(t, tz), HourRow())
        row.parts += 1
        row.outcomes[verdict] += 1
        if verdict != "pass":
            reasons[(verdict, reason)] += 1
        if reason != "interrupted":  # the process died before a verdict: no latency to count (journal row only)
            latency[product].append(latency_ms)
    return Report(journal, since, until, budget_ms, tz, dict(hours), reasons,
                  {p: np.asarray(v, np.float64) for p, v in latency.items()})


def percentile(values: np.ndarray, q: float) -> float:
    """Nearest rank: a latency some part really had (no interpolation between two parts)."""
    return float(np.percentile(values, q, method="inverted_cdf"))


def format_report(r: Report) -> str:
    zone = "UTC" if r.tz is timezone.utc else (r.tz.tzname(None) if r.tz else time.strftime("%Z"))
    out = [f"inspectd report: {r.journal}",
           f"window {r.when(r.since)} .. {r.when(r.until)} ({zone}), {r.parts} parts, budget {r.budget_ms:g} ms"]
    if not r.parts:
        out.append("no verdicts in this window")
        return "\n".join(out) + "\n"
    out += ["", "Yield per product and hour",
            f"{'product':<16} {'hour':<16} {'parts':>7} {'pass':>7} {'reject':>7} {'failsafe':>8} {'yield':>7}"]
    for product in sorted(r.hours):
        total = HourRow()
        for start, row in sorted(r.hours[product].items()):
            out.append(_yield_line(product, r.when(start), row))
            total.parts += row.parts
            total.outcomes.update(row.outcomes)
        out.append(_yield_line(product, "total", total))
    out += ["", "Reject and fail-safe reasons", f"{'verdict':<9} {'reason':<24} {'parts':>7} {'share':>7}"]
    if not r.reasons:
        out.append("none")
    for (verdict, reason), n in sorted(r.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"{verdict:<9} {reason or '-':<24} {n:>7} {100.0 * n / r.parts:>6.2f}%")
    out += ["", f"Deadline misses: {r.deadline_misses} ({100.0 * r.deadline_misses / r.parts:.2f}% of parts)"]
    head = "".join(f" {'p' + format(q, 'g'):>8}" for q in PERCENTILES)
    out += ["", "Latency, trigger to verdict (ms)",
            f"{'product':<16} {'parts':>7}{head} {'max':>8} {'over budget':>12}"]
    for product in sorted(r.latency_ms):
        v = r.latency_ms[product]
        cells = "".join(f" {percentile(v, q):>8.2f}" for q in PERCENTILES)
        over = int(np.count_nonzero(v > r.budget_ms))
        out.append(f"{product:<16} {len(v):>7}{cells} {v.max():>8.2f} {over:>12}")
    return "\n".join(out) + "\n"


def _yield_line(product: str, hour: str, row: HourRow) -> str:
    o = row.outcomes
    return (f"{product:<16} {hour:<16} {row.parts:>7} {o['pass']:>7} {o['reject']:>7} {o['failsafe']:>8} "
            f"{row.yield_pct:>6.1f}%")


def plot_report(r: Report, path: Path) -> Path:
    """Two panels: yield per hour and product; latency histogram with the budget and p99/p99.9 marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on an edge box
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def dt(t: float) -> datetime:
        return datetime.fromtimestamp(t, r.tz) if r.tz else datetime.fromtimestamp(t)

    def mid(t: float) -> datetime:  # centre of the part of this hour inside the window
        return dt((max(t, r.since) + min(t + 3600, r.until)) / 2)

    fig, (ax_y, ax_l) = plt.subplots(2, 1, figsize=(10, 8), constrained_layout=True)
    ax_n = ax_y.twinx()  # parts per hour behind the yield lines: a low yield on few parts reads differently
    per_hour: Counter[float] = Counter()
    for product in sorted(r.hours):
        hours = sorted(r.hours[product].items())
        for t, row in hours:
            per_hour[t] += row.parts
        ax_y.plot([mid(t) for t, _ in hours], [row.yield_pct for _, row in hours],
                  marker="o", label=f"{product} ({sum(row.parts for _, row in hours)} parts)")
    if per_hour:
        ax_n.bar([dt(t) for t in per_hour], list(per_hour.values()), width=1 / 24 * 0.95, align="edge",
                 color="lightgray", zorder=0, label="parts/hour")
    ax_n.set_ylabel("parts per hour (bars)")
    ax_y.set_zorder(ax_n.get_zorder() + 1)
    ax_y.patch.set_visible(False)
    ax_y.set_xlim(dt(hour_start(r.since, r.tz)), max(dt(r.until), dt(hour_start(r.since, r.tz)) + timedelta(hours=1)))
    ax_y.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=r.tz))
    ax_y.set_ylabel("yield, % passed")
    ax_y.set_title(f"Yield per hour, {r.when(r.since)} .. {r.when(r.until)}")
    low = min([100.0, *(row.yield_pct for h in r.hours.values() for row in h.values() if row.parts)])
    ax_y.set_ylim(max(0.0, low - 10), 101)
    ax_y.grid(alpha=0.3)
    if r.hours:
        ax_y.legend(loc="lower left")
    values = np.concatenate(list(r.latency_ms.values())) if r.latency_ms else np.zeros(0)
    if len(values):
        hi = max(float(values.max()), r.budget_ms) * 1.05
        ax_l.hist(values, bins=np.linspace(0, hi, 120), color="tab:blue", alpha=0.8)
        for q, style in ((99.0, "--"), (99.9, ":")):
            p = percentile(values, q)
            ax_l.axvline(p, color="black", linestyle=style, label=f"p{q:g} = {p:.2f} ms")
    ax_l.axvline(r.budget_ms, color="red", linewidth=2, label=f"budget {r.budget_ms:g} ms")
    ax_l.set_yscale("log")
    ax_l.set_xlabel("trigger to verdict, ms")
    ax_l.set_ylabel("parts (log)")
    over = int(np.count_nonzero(values > r.budget_ms))
    ax_l.set_title(f"Latency, {len(values)} parts, {over} over budget, {r.deadline_misses} deadline fail-safes")
    ax_l.legend(loc="upper right")
    ax_l.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
