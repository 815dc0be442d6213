"""Command line: `inspectd run | check-config | bench | ...`. User errors print without a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspectd.errors import ConfigError, ExitCode, InspectdError


def cmd_check_config(args: argparse.Namespace) -> int:
    from inspectd.config.load import load_config

    try:
        cfg = load_config(args.path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return int(ExitCode.CONFIG)
    print(f"{cfg.station_path}: ok ({len(cfg.products)} products: {', '.join(sorted(cfg.products))})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from inspectd.config.load import load_config
    from inspectd.daemon import Daemon, Options
    from inspectd.log import setup_logging

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return int(ExitCode.CONFIG)
    writer = setup_logging(cfg.station.log.level, cfg.station.log.format)
    try:
        daemon = Daemon(cfg, Options(journal_path=args.journal, max_parts=args.max_parts))
        return daemon.run()
    finally:
        writer.close()


def cmd_bench(args: argparse.Namespace) -> int:
    from inspectd.bench import run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="inspectd", description="Industrial edge inspection daemon")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon in the foreground (JSON logs on stdout)")
    p.add_argument("--config", required=True, type=Path, help="station YAML file")
    p.add_argument("--max-parts", type=int, default=None, help="exit 0 after N verdicts are journaled")
    p.add_argument("--journal", type=Path, default=None, help="journal path (overrides the station file)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a station file and all its products")
    p.add_argument("path", type=Path)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("bench", help="run the real pipeline as fast as it goes and report timings")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--parts", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--in-flight", type=int, default=2, help="parts admitted at once (admission control)")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InspectdError as e:
        print(f"inspectd: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
