"""Disk-full scenario: journal and archive on one small filesystem; how many verdicts miss the journal.

    sudo .venv/bin/python tools/disk_full.py --size-mb 8 --parts 3500 [--code DIR] [--json OUT]

Mounts a tmpfs of `--size-mb` (root needed), puts the journal and the archive on it (every part archived,
quota far above the disk, as a site that forgot to size it would), runs the demo station in-process for
`--parts` parts, stops it in order and counts journal rows against the verdicts issued. `--code DIR` imports
inspectd from another checkout (e.g. an export of an older commit) to measure the same scenario on it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=float, default=8)
    ap.add_argument("--parts", type=int, default=3500)
    ap.add_argument("--rate-hz", type=float, default=200)
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose inspectd is measured")
    ap.add_argument("--floor-mb", type=float, default=None,
                    help="archive.min_free_mb (only where the measured code has the key; default: its default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    import inspectd
    from inspectd.config.load import load_config
    from inspectd.config.schema import ArchiveConfig, JournalConfig
    from inspectd.daemon import Daemon, Options
    from tests.conftest import write_station

    work = Path(tempfile.mkdtemp(prefix="inspectd-diskfull-"))
    mnt = work / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(args.size_mb * 1024)}k", "tmpfs", str(mnt)], check=True)
    try:
        archive_cfg = {"enabled": True, "path": str(mnt / "archive"), "sample_pass": 1.0, "quota_mb": 10_000}
        floor = args.floor_mb if "min_free_mb" in ArchiveConfig.model_fields else None
        if floor is not None:
            archive_cfg["min_free_mb"] = floor
        journal_cfg: dict = {"path": str(mnt / "journal.sqlite")}
        if "min_free_mb" in JournalConfig.model_fields:  # the scenario is about running, not about starting
            journal_cfg["min_free_mb"] = 1
        station = write_station(work, {
            "camera": {"bank": 64, "rate_hz": args.rate_hz},
            "journal": journal_cfg,
            "archive": archive_cfg,
            "log": {"every_part": False}})
        d = Daemon(load_config(station), Options(handle_signals=False, max_parts=args.parts))
        d.start()
        t0 = time.monotonic()
        assert d.pipeline is not None and d.journal is not None
        while d.pipeline.stats.verdicts_total < args.parts and time.monotonic() - t0 < args.parts / args.rate_hz * 5:
            time.sleep(0.1)
        d.shutdown()
        verdicts = d.pipeline.stats.verdicts_total
        db = sqlite3.connect(f"file:{mnt / 'journal.sqlite'}?mode=ro", uri=True)
        rows = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
        db.close()
        archive = d.archive
        out = {"code": str(Path(inspectd.__file__).parent.parent), "size_mb": args.size_mb, "parts": args.parts,
               "archive_floor_mb": getattr(d.config.station.archive, "min_free_mb", None),
               "verdicts": verdicts, "journal_rows": rows, "rows_lost": verdicts - rows,
               "lost_share": round((verdicts - rows) / max(verdicts, 1), 4),
               "journal_counted_lost": d.journal.dropped,
               "journal_down_failsafes": d.pipeline.stats.failsafe_reasons.get("journal_down", 0),
               "archive_saved": archive.saved if archive else 0,
               "archive_dropped": dict(archive.dropped) if archive else {}}
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
