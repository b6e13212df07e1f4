"""The `nexo` command line: one function per subcommand, named exit codes.

`nexo --config DIR` with no subcommand runs the daemon (the container's
command). Logs go to stderr; command output (tables, `--json` documents) to
stdout. Commands that need the daemon say so and exit 1 when it is not
running, within a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nexo_actors import __version__
from nexo_actors.config import load_config
from nexo_actors.config.redact import redacted_dump
from nexo_actors.errors import ConfigErrors, NexoError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = "./conf"

Command = Callable[[argparse.Namespace], int]


def cmd_start(args: argparse.Namespace) -> int:
    from nexo_actors.daemon import run_daemon

    return run_daemon(Path(args.config), takeover=not args.no_takeover)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigErrors as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE
    if args.print:
        print(json.dumps(redacted_dump(config), indent=2, sort_keys=True))
    else:
        print(f"{args.config}: configuration is valid ({len(config.agents)} agents, "
              f"broker {config.broker.type})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nexo",
        description="Run and operate the nexo_actors runtime. With no command, runs the daemon.",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="DIR",
                        help="configuration directory (default: ./conf)")
    parser.add_argument("--version", action="version", version=f"nexo_actors {__version__}")
    parser.set_defaults(func=cmd_start, no_takeover=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("start", help="run the runtime in the foreground until SIGTERM/SIGINT")
    p.add_argument("--no-takeover", action="store_true",
                   help="exit 1 if another instance holds the data directory, instead of "
                        "replacing it")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("check-config", help="validate the configuration; exit 0 valid, 1 invalid")
    p.add_argument("--print", action="store_true",
                   help="print the resolved configuration with secrets as ***")
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except NexoError as exc:
        print(f"nexo: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
