"""A QueueStore + BrokerBridge in a process of its own, driven line by line.

Fault tests need "the runtime process" to SIGKILL while events sit in the
disk queue or in nats-py's buffer. Until `bin/nexo start` hosts agents, this
script is that process: it wires the two actors exactly as the daemon does,
reads commands on stdin and prints one line per outcome on stdout (flushed),
so a test can tell which events were *accepted* (their `on_done` ran with no
error) before it kills the process.

Run: python -m tests.support.bridge_process (--config DIR | --db PATH --broker JSON)
     [--instance ID] [--attach AGENT=SUBJECT[,SUBJECT...]]...

Commands (stdin)                     Lines printed (stdout)
  publish TOPIC COUNT [RATE]         published ID (when handed to the bridge),
                                     accepted ID | failed ID ERROR (from on_done),
                                     publish-end COUNT (all handed over)
  inbound TOPIC TEXT                 accepted ID | failed ID ERROR | refused ERROR
  journal AGENT TOPIC ID TEXT        (an inbound event for AGENT, as from the bus)
  complete ID AGENT                  completed ID AGENT
  inbox                              inbox ID AGENT (per open row), inbox-end N
  stats                              stats pending=N paused=0|1 connected=0|1|-
  quit (or end of stdin)             bye, then exit 0
Deliveries to attached agents print: deliver AGENT ID 0|1 (redelivered).
`ready` is printed once both actors run.

`BridgeProcess` is the test side: it starts the script, collects its lines and
kills it for real (SIGKILL) when asked; always stop it in a finally/fixture.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.lines import LineCollector

REPO = Path(__file__).resolve().parents[2]


# --- the process side ----------------------------------------------------------


class _Out:
    """Line-atomic, flushed stdout shared by every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, *parts: object) -> None:
        line = " ".join(str(p) for p in parts)
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _broker(args: argparse.Namespace) -> tuple[Any, Path]:
    import msgspec

    from nexo_actors.config.schema import Broker
    from nexo_actors.config.units import dec_hook

    if args.config:
        from nexo_actors.config import load_config

        config = load_config(args.config)
        return config.broker, config.queue_db
    if not args.db or args.broker is None:
        raise SystemExit("bridge_process: give --config DIR, or --db PATH and --broker JSON")
    return msgspec.convert(json.loads(args.broker), Broker, dec_hook=dec_hook), Path(args.db)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bridge_process")
    parser.add_argument("--config", help="config directory (broker.yaml is used)")
    parser.add_argument("--db", help="broker.db path (with --broker)")
    parser.add_argument("--broker", help="broker settings as JSON (the keys of broker.yaml)")
    parser.add_argument("--instance", default="bridge-process")
    parser.add_argument("--attach", action="append", default=[], metavar="AGENT=SUBJECTS")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from nexo_actors.bus.bridge import Bridge, BrokerBridge
    from nexo_actors.errors import NexoError
    from nexo_actors.messages import CompleteInbound, Event, OpenInbox, new_event
    from nexo_actors.store.queue import QueueStore

    settings, db = _broker(args)
    out = _Out()
    holder: list[Bridge] = []

    def on_depth(depth: int) -> None:
        if holder:
            holder[0].on_depth(depth)

    def deliver(agent: str, event: Event, redelivered: bool) -> None:
        out("deliver", agent, event.id, int(redelivered))

    store = QueueStore.start(db, settings.persistence, max_pending=settings.limits.max_pending,
                             max_attempts=settings.max_attempts, on_depth=on_depth)
    bridge = BrokerBridge.start(settings, store, instance_id=args.instance, deliver=deliver)
    core: Bridge = bridge.proxy().core.get()
    holder.append(core)
    for spec in args.attach:
        agent, _, subjects = spec.partition("=")
        core.attach(agent, subjects.split(","))

    def outcome(event_id: str) -> Any:
        def done(error: BaseException | None) -> None:
            if error is None:
                out("accepted", event_id)
            else:
                out("failed", event_id, str(error).replace("\n", " "))
        return done

    def publish(topic: str, count: int, rate: float) -> None:
        start = time.monotonic()
        for n in range(count):
            if rate > 0:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event = new_event(topic, {"text": f"event {n}", "n": n}, args.instance)
            out("published", event.id)
            try:
                core.publish(topic, event, on_done=outcome(event.id))
            except NexoError as exc:
                out("failed", event.id, str(exc))
        out("publish-end", count)

    out("ready")
    try:
        for raw in sys.stdin:
            words = raw.split()
            if not words:
                continue
            match words:
                case ["publish", topic, count, *rest]:
                    publish(topic, int(count), float(rest[0]) if rest else 0.0)
                case ["inbound", topic, *text]:
                    event = new_event(topic, {"text": " ".join(text), "sender": "test"}, "cli")
                    try:
                        core.publish_inbound(topic, event, on_done=outcome(event.id))
                    except NexoError as exc:
                        out("refused", str(exc))
                case ["journal", agent, topic, event_id, *text]:
                    event = Event(id=event_id, ts=time.time(), topic=topic, source="test",
                                  payload={"text": " ".join(text), "sender": "test"})
                    core.accept(event, agent)
                case ["complete", event_id, agent]:
                    store.tell(CompleteInbound(
                        event_id=event_id, agent_id=agent,
                        done=lambda _r, e, i=event_id, a=agent: out("completed", i, a)
                        if e is None else out("failed", i, str(e))))
                case ["inbox"]:
                    rows = store.ask(OpenInbox())
                    for row in rows:
                        out("inbox", row.id, row.agent_id)
                    out("inbox-end", len(rows))
                case ["stats"]:
                    d = core.details()
                    connected = "-" if d["connected"] is None else int(bool(d["connected"]))
                    out(f"stats pending={d['pending']} paused={int(core.intake_paused)} "
                        f"connected={connected}")
                case ["quit"]:
                    break
                case _:
                    out("error unknown command:", raw.strip())
    finally:
        bridge.proxy().close(time.monotonic() + 5).get()
        bridge.stop()
        store.stop()
        out("bye")
    return 0


# --- the test side -------------------------------------------------------------


class BridgeProcess:
    """The script above as a real child process; lines are collected on a thread."""

    def __init__(self, *, db: Path, broker: dict[str, Any], instance: str = "bridge-process",
                 attach: dict[str, list[str]] | None = None) -> None:
        self.argv = [sys.executable, "-m", "tests.support.bridge_process", "--db", str(db),
                     "--broker", json.dumps(broker), "--instance", instance]
        for agent, subjects in (attach or {}).items():
            self.argv += ["--attach", f"{agent}={','.join(subjects)}"]
        self.proc: subprocess.Popen[str] | None = None
        self.output: LineCollector | None = None

    @property
    def lines(self) -> list[str]:
        return self.output.stdout if self.output else []

    @property
    def stderr(self) -> list[str]:
        return self.output.stderr if self.output else []

    def start(self, timeout: float = 30.0) -> BridgeProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1, start_new_session=True)
        self.output = LineCollector(self.proc, "bridge_process")
        self.wait_line(r"^ready$", timeout)
        return self

    def send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def snapshot(self) -> list[str]:
        assert self.output is not None
        with self.output.cond:
            return list(self.output.stdout)

    def ids(self, kind: str) -> list[str]:
        """Event ids of every `kind ID ...` line so far (e.g. kind="accepted"), in order."""
        prefix = kind + " "
        return [line.split()[1] for line in self.snapshot() if line.startswith(prefix)]

    def wait_line(self, pattern: str, timeout: float = 30.0, start: int = 0) -> str:
        assert self.output is not None
        return self.output.wait_for(pattern, timeout, start, stdout=True)

    def wait_count(self, kind: str, count: int, timeout: float = 30.0) -> list[str]:
        """Wait until at least `count` `kind ...` lines were printed; returns their ids."""
        assert self.output is not None
        deadline = time.monotonic() + timeout
        with self.output.cond:
            while True:
                ids = [ln.split()[1] for ln in self.lines if ln.startswith(kind + " ")]
                if len(ids) >= count:
                    return ids
                if time.monotonic() >= deadline or (self.proc and self.proc.poll() is not None):
                    raise AssertionError(
                        f"bridge_process printed {len(ids)} {kind!r} lines, expected {count};"
                        "\nstderr tail:\n" + "\n".join(self.stderr[-40:]))
                self.output.cond.wait(0.2)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing in the process gets to run."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.output is not None:
            self.output.join()

    def quit(self, timeout: float = 20.0) -> int:
        """Clean shutdown through the `quit` command; killed if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self.kill()
        if self.output is not None:
            self.output.join()
        return self.proc.returncode

    def close(self) -> None:
        """Teardown: whatever state it is in, it is gone afterwards."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


if __name__ == "__main__":
    raise SystemExit(main())
