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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from nexo_actors import __version__
from nexo_actors.config import Config, load_config
from nexo_actors.config.redact import redacted_dump
from nexo_actors.control.client import request
from nexo_actors.errors import ConfigErrors, NexoError
from nexo_actors.extensions.discovery import discover
from nexo_actors.extensions.listing import exit_code, render_table, to_json
from nexo_actors.messages import (
    ActorsReply,
    ActorsRequest,
    ControlRequest,
    OkReply,
    ReloadRequest,
    SendReply,
    SendRequest,
    StatusReply,
    StatusRequest,
    StopRequest,
)
from nexo_actors.store.dlq import list_dead_letters, purge, replay

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = "./conf"
# Every control request gets an answer (or an error) within this.
CONTROL_TIMEOUT = 5.0

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


def _config(args: argparse.Namespace) -> Config:
    """Load the config for a command; ConfigErrors propagate as an operator message."""
    return load_config(args.config)


def _ask(args: argparse.Namespace, message: ControlRequest, timeout: float = CONTROL_TIMEOUT) -> Any:
    config = _config(args)
    return request(config.control_socket, message, timeout=timeout, config_hint=str(args.config))


def _print_json(value: Any) -> None:
    print(msgspec.json.encode(value).decode())


def cmd_status(args: argparse.Namespace) -> int:
    status: StatusReply = _ask(args, StatusRequest())
    if args.json:
        _print_json(status)
        return EXIT_OK
    ready = status.ready
    print(f"nexo {status.version}  pid {status.pid}  up {status.uptime_s:.0f}s  "
          f"config {status.config_dir}  data {status.data_dir}")
    print(f"ready: {'yes' if ready.ready else 'no'}"
          + "".join(f"\n  not ready: {r.subsystem}: {r.detail}" for r in ready.reasons)
          + "".join(f"\n  degraded: {r.subsystem}: {r.detail}" for r in ready.degraded))
    broker = status.broker
    print(f"broker: {broker.get('type')}"
          + (f" {broker.get('url')} connected={broker.get('connected')} breaker={broker.get('breaker')}"
             if broker.get("type") == "nats" else "")
          + f"  intake_paused={broker.get('intake_paused')}")
    queue = status.queue
    print(f"queue: pending {queue.get('pending', '?')} / {queue.get('max_pending', '?')}  "
          f"dead letters {queue.get('dead_letters', '?')}  inbox open {queue.get('inbox_open', '?')}")
    print(f"workers: {status.sizing.get('summary', '?')}")
    rows = [("WORKER", "PID", "STATUS", "RESTARTS", "RSS_MB", "AGENTS")]
    rows += [(w.name, str(w.pid), w.status, str(w.restarts), f"{w.rss_bytes / (1 << 20):.1f}",
              str(w.details.get("agents", ""))) for w in status.workers]
    print(format_table(rows))
    print("agents: " + ", ".join(f"{name} {state}" for name, state in sorted(status.agents.items())))
    return EXIT_OK


def cmd_actors(args: argparse.Namespace) -> int:
    reply: ActorsReply = _ask(args, ActorsRequest())
    if args.json:
        _print_json({"actors": reply.actors})
        return EXIT_OK
    rows = [("NAME", "KIND", "PID", "STATUS", "MAILBOX", "RESTARTS", "UPTIME_S", "RSS_MB", "CPU%",
             "LAST_ERROR")]
    rows += [(a.name, a.kind, str(a.pid), a.status, str(a.mailbox_depth), str(a.restarts),
              f"{a.uptime_s:.1f}", f"{a.rss_bytes / (1 << 20):.1f}" if a.rss_bytes else "-",
              f"{a.cpu_percent:.1f}" if a.rss_bytes else "-", a.last_error or "-")
             for a in reply.actors]
    print(format_table(rows))
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    wait = float(args.wait)
    reply: SendReply = _ask(args, SendRequest(channel=args.channel, text=args.text,
                                              sender=args.sender, wait=wait),
                            timeout=wait + CONTROL_TIMEOUT)
    if reply.reply is None:
        print(f"sent {reply.event_id}")
    else:
        print(reply.reply.text or "")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    reply: OkReply = _ask(args, ReloadRequest(), timeout=30.0)
    print(reply.detail)
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    reply: OkReply = _ask(args, StopRequest())
    print(reply.detail)
    return EXIT_OK


def cmd_dlq_list(args: argparse.Namespace) -> int:
    rows = list_dead_letters(_config(args).queue_db, args.limit)
    if args.json:
        print(json.dumps({"dead_letters": [
            {"id": r.id, "topic": r.topic, "failed_at": rfc3339(r.failed_at), "reason": r.reason,
             "attempts": r.attempts, "payload_bytes": len(r.payload)} for r in rows]}))
        return EXIT_OK
    table = [("ID", "TOPIC", "FAILED_AT", "REASON")]
    table += [(r.id, r.topic, rfc3339(r.failed_at), r.reason) for r in rows]
    print(format_table(table))
    if not rows:
        print("(no dead letters)")
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    if not args.all and not args.ids:
        print("nexo: dlq replay needs an id (see `nexo dlq list`) or --all", file=sys.stderr)
        return EXIT_USAGE
    moved = replay(_config(args).queue_db, None if args.all else args.ids)
    print(f"replayed {moved} dead letter{'s' if moved != 1 else ''} to pending_events "
          "(a running nexo drains them within seconds; a stopped one at its next start)")
    return EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    if not args.yes:
        print("nexo: dlq purge deletes every dead letter; run it again with --yes", file=sys.stderr)
        return EXIT_FAILURE
    count = purge(_config(args).queue_db)
    print(f"purged {count} dead letter{'s' if count != 1 else ''}")
    return EXIT_OK


def cmd_ext_list(args: argparse.Namespace) -> int:
    config = _config(args)
    found = discover(config.extensions, config.cwd)
    if args.json:
        print(json.dumps(to_json(found)))
    else:
        print(render_table(found))
    return exit_code(found)


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


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

    p = sub.add_parser("status", help="broker, queue depths, workers and their sizing, agents")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("actors", help="state of every actor: pid, status, mailbox, restarts, errors")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_actors)

    p = sub.add_parser("send", help="publish an inbound message on a channel and print the reply")
    p.add_argument("channel", help="channel name, e.g. cli (publishes on plugin.inbound.<channel>)")
    p.add_argument("text")
    p.add_argument("--sender", default="cli", help="sender id in the payload (default: cli)")
    p.add_argument("--wait", default=10.0, type=float, metavar="SECONDS",
                   help="how long to wait for the reply (0: do not wait; default 10)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("reload", help="re-read agent and LLM config; applies from the next message")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("stop", help="stop the running daemon (same as SIGTERM)")
    p.set_defaults(func=cmd_stop)

    dlq = sub.add_parser("dlq", help="dead letters: list, replay, purge").add_subparsers(
        title="dlq commands", metavar="ACTION", required=True)
    p = dlq.add_parser("list", help="list dead letters (id, topic, failed_at, reason)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N rows")
    p.set_defaults(func=cmd_dlq_list)
    p = dlq.add_parser("replay", help="move dead letters back to the queue (attempts reset to 0)")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="replay every dead letter")
    p.set_defaults(func=cmd_dlq_replay)
    p = dlq.add_parser("purge", help="delete every dead letter (needs --yes)")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_dlq_purge)

    ext = sub.add_parser("ext", help="extensions").add_subparsers(
        title="ext commands", metavar="ACTION", required=True)
    p = ext.add_parser("list", help="discovered extensions and their status")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(func=cmd_ext_list)
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
