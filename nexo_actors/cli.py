"""The `nexo` command line: one function per subcommand, named exit codes.

`nexo --config DIR` with no subcommand runs the daemon (the container's
command). Logs go to stderr; command output (tables, `--json` documents) to
stdout. Commands that need the daemon say so and exit 1 when it is not
running, within a second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from nexo_actors import __version__
from nexo_actors.config import Config, load_config
from nexo_actors.config import paths as config_paths
from nexo_actors.config.load import parse_bind
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
from nexo_actors.sidecar import probe_host
from nexo_actors.store.dlq import list_dead_letters, purge, replay

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# NEXO_CONFIG lets `docker compose exec nexo nexo dlq list` find the daemon's config.
DEFAULT_CONFIG = os.environ.get("NEXO_CONFIG") or "./conf"
# Every control request gets an answer (or an error) within this.
CONTROL_TIMEOUT = 5.0
# `nexo health`: each HTTP probe gets this long (/ready: the sidecar's
# control_timeout plus this), and the probes run in parallel.
HEALTH_PROBE_TIMEOUT = 2.0
BREAKER_STATES = {0: "closed", 1: "open", 2: "half-open"}

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
    return request(config_paths.control_socket(args.config), message, timeout=timeout,
                   config_hint=str(args.config))


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
    rows = list_dead_letters(config_paths.queue_db(args.config), args.limit)
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
    moved = replay(config_paths.queue_db(args.config), None if args.all else args.ids)
    print(f"replayed {moved} dead letter{'s' if moved != 1 else ''} to pending_events "
          "(a running nexo drains them within seconds; a stopped one at its next start)")
    return EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    if not args.yes:
        print("nexo: dlq purge deletes every dead letter; run it again with --yes", file=sys.stderr)
        return EXIT_FAILURE
    count = purge(config_paths.queue_db(args.config))
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


def _probe(url: str, timeout: float) -> dict[str, Any]:
    """GET `url` (http.client: no proxy from the environment); status, body, time or error."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    started = time.monotonic()
    result: dict[str, Any] = {"url": url, "ok": False, "status": None, "ms": None, "error": None}
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        result["body"] = response.read().decode(errors="replace")
        result["status"] = response.status
        result["ok"] = response.status == 200
    except (OSError, http.client.HTTPException) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        conn.close()
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _base_url(bind: str) -> str:
    host, port = parse_bind(bind)
    host = probe_host(host)  # a wildcard bind is reached on loopback
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _key_counters(text: str) -> dict[str, Any]:
    """The operator's summary of a /metrics scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    def total(name: str) -> float | None:
        values = samples.get(name)
        return None if values is None else sum(v for _, v in values)

    def by(name: str, label: str) -> dict[str, float]:
        return {labels.get(label, ""): v for labels, v in samples.get(name, [])}

    return {
        "series": sum(len(v) for v in samples.values()),
        "messages_processed": total("messages_processed_total"),
        "messages_processed_by_agent": by("messages_processed_total", "agent"),
        "messages_dropped": total("messages_dropped_total"),
        "dead_letters": total("dead_letters"),
        "dead_letters_since_boot": total("dead_letters_total"),
        "disk_queue_pending": total("disk_queue_pending"),
        "nats_connected": total("nats_connected"),
        "breakers": {name: BREAKER_STATES.get(int(v), str(v))
                     for name, v in by("circuit_breaker_state", "breaker").items()},
        "restarts": {name: v for name, v in by("actor_restarts_total", "actor").items() if v},
    }


def cmd_health(args: argparse.Namespace) -> int:
    sidecar = config_paths.sidecar_settings(args.config)
    if not sidecar.enabled:
        print(f"nexo: the sidecar is disabled in {args.config}/runtime.yaml (sidecar.enabled: "
              "false); there is nothing to probe", file=sys.stderr)
        return EXIT_FAILURE
    health, metrics_url = _base_url(sidecar.health_bind), _base_url(sidecar.metrics_bind)
    with ThreadPoolExecutor(max_workers=3) as pool:
        live_f = pool.submit(_probe, f"{health}/health", HEALTH_PROBE_TIMEOUT)
        ready_f = pool.submit(_probe, f"{health}/ready", sidecar.control_timeout + HEALTH_PROBE_TIMEOUT)
        metrics_f = pool.submit(_probe, f"{metrics_url}/metrics", HEALTH_PROBE_TIMEOUT)
        live, ready, scrape = live_f.result(), ready_f.result(), metrics_f.result()
    live.pop("body", None)
    try:
        ready["document"] = json.loads(ready.pop("body", "") or "null")
    except ValueError:
        ready["document"] = None
    counters: dict[str, Any] = {}
    if scrape["ok"]:
        try:
            counters = _key_counters(scrape.pop("body"))
        except ValueError as exc:
            scrape.update(ok=False, error=f"unparsable metrics: {exc}")
    scrape.pop("body", None)
    problems = [f"{name}: {probe['error'] or 'HTTP ' + str(probe['status'])}"
                for name, probe in (("live", live), ("ready", ready), ("metrics", scrape))
                if not probe["ok"]]
    open_breakers = sorted(b for b, state in counters.get("breakers", {}).items() if state != "closed")
    if args.strict:
        problems += [f"circuit breaker {b} is {counters['breakers'][b]}" for b in open_breakers]
    if args.json:
        print(json.dumps({"ok": not problems, "strict": args.strict, "live": live, "ready": ready,
                          "metrics": scrape, "counters": counters, "problems": problems}))
    else:
        _print_health(live, ready, scrape, counters, problems)
    return EXIT_FAILURE if problems else EXIT_OK


def _print_health(live: dict[str, Any], ready: dict[str, Any], scrape: dict[str, Any],
                  counters: dict[str, Any], problems: list[str]) -> None:
    def line(name: str, probe: dict[str, Any], note: str = "") -> str:
        state = "ok" if probe["ok"] else "FAIL"
        status = probe["status"] if probe["status"] is not None else probe["error"]
        return f"{name:<8} {state:<5} {status}  {probe['url']}  {probe['ms']} ms{note}"

    doc = ready.get("document") or {}
    print(line("live", live))
    note = (f"  agents {doc.get('agents_running')}/{doc.get('agents_total')} running, "
            f"broker {doc.get('broker')}") if doc else ""
    print(line("ready", ready, note))
    for reason in doc.get("reasons", []):
        print(f"         not ready: {reason['subsystem']}: {reason['detail']}")
    for reason in doc.get("degraded", []):
        print(f"         degraded: {reason['subsystem']}: {reason['detail']}")
    print(line("metrics", scrape, f"  {counters['series']} series" if counters else ""))
    if counters:
        num = _num
        by_agent = sorted(counters["messages_processed_by_agent"].items())
        agents = ", ".join(f"{a} {num(v)}" for a, v in by_agent)
        print(f"messages processed {num(counters['messages_processed'])}"
              + (f" ({agents})" if agents else "")
              + f", dropped {num(counters['messages_dropped'])}, dead letters "
              f"{num(counters['dead_letters'])}, disk queue pending {num(counters['disk_queue_pending'])}")
        breakers = ", ".join(f"{b} {s}" for b, s in sorted(counters["breakers"].items())) or "-"
        restarts = ", ".join(f"{a} {num(v)}" for a, v in sorted(counters["restarts"].items())) or "none"
        print(f"nats_connected {num(counters['nats_connected'])}, breakers: {breakers}, "
              f"restarts: {restarts}")
    print("healthy" if not problems else "UNHEALTHY: " + "; ".join(problems))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


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
                        help="configuration directory (default: $NEXO_CONFIG, else ./conf)")
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

    p = sub.add_parser("health", help="probe the sidecar: live, ready, metrics and key counters; "
                                      "exit 1 if a probe fails")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--strict", action="store_true",
                   help="also exit 1 while a circuit breaker is open or half-open")
    p.set_defaults(func=cmd_health)

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
