"""Command line: `inspectd run | check-config | bench | ...`. User errors print without a traceback."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from inspectd.errors import ConfigError, ExitCode, InspectdError
from inspectd.supervise.signals import SignalFlags


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every problem of every file in one pass, schema first, then what `run` would refuse (models, ROIs, files)."""
    from inspectd.config.load import collect_config
    from inspectd.preflight import preflight

    path = args.config or args.path
    if path is None:
        print("inspectd check-config: give --config STATION.yaml", file=sys.stderr)
        return int(ExitCode.CONFIG)
    report = collect_config(path)
    checked = preflight(report) if not args.schema_only else None
    problems = report.problems + (checked.problems if checked else [])
    for line in problems:
        print(line, file=sys.stderr)
    for note in checked.notes if checked else []:
        print(f"note: {note}", file=sys.stderr)
    if problems:  # stderr holds `file:line: key: message` lines only (and notes), so tools can parse it
        return int(ExitCode.CONFIG)
    print(f"{report.path}: ok ({len(report.products)} products: {', '.join(sorted(report.products))})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from inspectd.config.load import load_config
    from inspectd.daemon import Daemon, Options
    from inspectd.log import setup_logging

    cfg = load_config(args.config)
    writer = setup_logging(cfg.station.log.level, cfg.station.log.format)
    try:
        daemon = Daemon(cfg, Options(journal_path=args.journal, max_parts=args.max_parts,
                                     signals=getattr(args, "signals", None), freeze_heap=True))
        return daemon.run()
    finally:
        writer.close()


def _producers(args: argparse.Namespace) -> list[Path]:
    """Producers from --producer, else from the station file's genicam camera (GENICAM_GENTL64_PATH is added)."""
    if args.producer:
        return list(args.producer)
    if args.config:
        from inspectd.config.load import load_station

        camera = load_station(args.config).camera
        return list(getattr(camera, "producers", []))
    return []


def cmd_cameras(args: argparse.Namespace) -> int:
    from inspectd.camera.genicam_tools import list_cameras

    cams = list_cameras(_producers(args))
    if args.json:
        print(json.dumps(cams, indent=2))
        return 0
    cols = ("vendor", "model", "serial", "user_id", "interface")
    print("  ".join(f"{c:<16}" for c in cols))
    for cam in cams:
        print("  ".join(f"{cam.get(c, ''):<16}" for c in cols))
    if not cams:
        print("no cameras found (check the producers and GENICAM_GENTL64_PATH)", file=sys.stderr)
    return 0


def cmd_camera_features(args: argparse.Namespace) -> int:
    from inspectd.camera.genicam_tools import dump_features

    print(dump_features(_producers(args), args.serial))
    return 0


def _outputs(text: str) -> list[str]:
    from inspectd.bench import OUTPUTS

    names = [n.strip() for n in text.split(",") if n.strip()]
    if unknown := [n for n in names if n not in OUTPUTS]:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)} (choose from {', '.join(OUTPUTS)})")
    return names


def cmd_bench(args: argparse.Namespace) -> int:
    from inspectd.bench import run_bench
    from inspectd.log import setup_logging

    # With --outputs log the daemon's verdict lines are rendered at info, as `inspectd run` does, into /dev/null
    # (the bench's own warnings with them); otherwise warnings go to stderr: stdout carries the report alone.
    lines = "log" in args.outputs
    with open(os.devnull, "w") if lines else contextlib.nullcontext(sys.stderr) as out:
        writer = setup_logging("info" if lines else "warning", out=out)
        try:
            return run_bench(args)
        finally:
            writer.close()


def cmd_report(args: argparse.Namespace) -> int:
    import time
    from datetime import timezone

    from inspectd.report import build_report, format_report, parse_time, plot_report

    journal, budget_ms = args.journal, args.budget_ms
    if args.config is not None:  # the station file knows where its journal is and its budget
        from inspectd.config.load import load_station

        station = load_station(args.config.resolve())
        journal = journal or station.journal.path
        budget_ms = budget_ms or station.cycle_budget_ms
    if journal is None:
        print("inspectd report: give --journal or --config", file=sys.stderr)
        return int(ExitCode.CONFIG)
    tz = timezone.utc if args.utc else None
    now = time.time()
    try:
        since, until = parse_time(args.since, now, tz), parse_time(args.until, now, tz)
        report = build_report(journal, since, until, budget_ms or 50.0, tz)
    except (ValueError, FileNotFoundError) as e:
        print(f"inspectd report: {e}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    print(format_report(report), end="")
    if not args.no_png:  # beside the journal (var/), not wherever the command happened to be run
        print(f"plot: {plot_report(report, args.png or Path(journal).with_name('report.png'))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="inspectd", description="Industrial edge inspection daemon")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon in the foreground (JSON logs on stdout)")
    p.add_argument("--config", required=True, type=Path, help="station YAML file")
    p.add_argument("--max-parts", type=int, default=None, help="exit 0 after N verdicts are journaled")
    p.add_argument("--journal", type=Path, default=None, help="journal path (overrides the station file)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a station file and all its products as `run` would: schema, "
                                            "models, ROIs, files (every problem in one pass)")
    p.add_argument("path", type=Path, nargs="?", help="station YAML file (same as --config)")
    p.add_argument("--config", type=Path, default=None, help="station YAML file")
    p.add_argument("--schema-only", action="store_true", help="only the files' schema: do not open the models")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("bench", help="run the real pipeline as fast as it goes and report timings")
    p.add_argument("--config", required=True, type=Path, help="station YAML file")
    p.add_argument("--parts", type=int, default=1000, help="parts to time (after the warm-up)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--in-flight", type=int, default=2, help="parts admitted at once (admission control)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="also time the first part after a pause of this many seconds (e2e and stages), with and "
                   "without keep-warm (watchdog.keep_warm_s = pause / 4)")
    p.add_argument("--pause-repeats", type=int, default=3, help="pauses timed with --pause")
    p.add_argument("--outputs", type=_outputs, default=[],
                   help="also feed the daemon's own verdict outputs, comma-separated: "
                   "journal (with its ahead log, in a temporary folder), metrics (no HTTP server), log (a JSON line "
                   "per verdict, to /dev/null); their cost shows in the figures")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="shift report from the journal: yield, reject reasons, latency; PNG plot")
    p.add_argument("--journal", type=Path, default=None, help="journal file (default: the station's)")
    p.add_argument("--config", type=Path, default=None, help="station YAML: journal path and cycle budget")
    p.add_argument("--since", default="8h", help="start: 'now', '8h' / '30m' / '2d' ago, or '2026-11-24 06:00'")
    p.add_argument("--until", default="now", help="end, same forms as --since")
    p.add_argument("--budget-ms", type=float, default=None, help="cycle budget (default: station's, else 50)")
    p.add_argument("--png", type=Path, default=None, help="plot file (default: report.png next to the journal)")
    p.add_argument("--no-png", action="store_true", help="text only, no plot")
    p.add_argument("--utc", action="store_true", help="hours and times in UTC instead of local time")
    p.set_defaults(func=cmd_report)

    for name, func, text in (("cameras", cmd_cameras, "list GenICam cameras of the configured producers"),
                             ("camera-features", cmd_camera_features, "dump a camera's GenICam node map")):
        p = sub.add_parser(name, help=text)
        if name == "camera-features":
            p.add_argument("serial", help="camera serial number")
        else:
            p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("--config", type=Path, help="station file whose camera.producers to use")
        p.add_argument("--producer", type=Path, action="append", help="GenTL producer .cti (repeatable)")
        p.set_defaults(func=func)

    from inspectd.engines.cli import add_engine_parsers  # build-engine, quantize, compare, eval

    add_engine_parsers(sub)
    from inspectd.anomaly.fit import add_parser as add_fit_anomaly_parser  # torch only when it runs

    add_fit_anomaly_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signals = None
    if argv[:1] == ["run"]:  # before anything else: a signal while modules and models load must not kill us
        signals = SignalFlags()
        signals.install()
    args = build_parser().parse_args(argv)
    args.signals = signals
    try:
        return int(args.func(args))
    except ConfigError as e:  # for technicians: file:line: key: message, one per line, no traceback
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return int(e.exit_code)
    except InspectdError as e:
        print(f"inspectd: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
