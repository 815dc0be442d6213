"""Hot-path cost of the journal per part: `accept` (ahead record as the part is created) + `submit` (ahead record
of the verdict, then the queue), one part every millisecond while the writer thread runs, as in the daemon.

    .venv/bin/python tools/bench_journal.py [--parts 3000] [--code DIR]

`--code DIR` measures another checkout (an older one has no `accept`: only `submit` is timed there).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=3000)
    ap.add_argument("--code", type=Path, default=ROOT)
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    sys.setswitchinterval(0.0002)  # as the daemon runs (pipeline.gil_switch_ms default; --code may predate it)
    import numpy as np

    from inspectd.journal import Journal
    from inspectd.types import Outcome, Part, Trigger, Verdict

    j = Journal(Path(tempfile.mkdtemp(prefix="inspectd-bench-journal-")) / "j.sqlite")
    j.start()
    cost = []
    for s in range(1, args.parts + 1):
        now = time.monotonic()
        part = Part(s, Trigger(s, now), "disc-a", now + 1)
        v = Verdict(seq=s, part_id=s, product="disc-a", outcome=Outcome.PASS, reason="", result_code=0, plc_ok=True,
                    score=0.1, scores={"good": 0.9, "defect": 0.1}, t_trigger=now, t_verdict=now + 0.002, truth=None,
                    model_sha256="ab" * 32, stage_ms={"grab": 0.01, "preprocess": 0.3, "infer": 1.3, "decide": 0.05},
                    wall_time=time.time())
        t0 = time.perf_counter()
        if hasattr(j, "accept"):
            j.accept(part)
        j.submit(v)
        cost.append(time.perf_counter() - t0)
        time.sleep(0.001)
    j.close()
    c = np.asarray(cost) * 1e6
    print(f"{args.code}: accept+submit per part p50 {np.percentile(c, 50):.1f} us, p99 {np.percentile(c, 99):.1f} us, "
          f"max {c.max():.0f} us; rows written {j.written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
