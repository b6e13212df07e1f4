"""SIGTERM, a second SIGTERM, SIGHUP: the lifecycle promises of SPEC §6."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from nexo_actors.errors import NexoError
from tests.support.confdir import write_conf
from tests.support.control import Control
from tests.support.metrics import sample
from tests.support.nats import NatsServer
from tests.support.probe import Probe
from tests.support.runtime import RuntimeProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
GRACE = 5.0


def test_sigterm_under_load_exits_0_in_5s_and_every_event_is_answered_once_after_restart(
        tmp_path: Path, data_dir: Path, nats_server: NatsServer, start_runtime) -> None:
    conf = write_conf(tmp_path / "conf", data_dir,
                      broker={"type": "nats", "url": nats_server.url, "reconnect_wait": "0.2s"})
    probe = Probe(nats_server.url)
    try:
        probe.subscribe("plugin.outbound.>")
        first = start_runtime(conf).wait_ready()
        ctl = Control(conf)
        wait_until(lambda: ctl.ready().ready, what="ready")
        accepted: list[str] = []
        refused: list[int] = []
        stop_sending = threading.Event()
        term_at: list[float] = []

        def sender() -> None:
            for i in range(1000):
                try:
                    accepted.append(ctl.send(f"m{i}", wait=0).event_id)
                except (NexoError, OSError):
                    refused.append(i)  # refused while stopping or down: sent again later
                if i == 300:
                    term_at.append(time.monotonic())
                    first.send_signal(signal.SIGTERM)

        thread = threading.Thread(target=sender)
        thread.start()
        code = first.wait_exit(timeout=GRACE + 5)
        stopped = time.monotonic()
        thread.join(60)
        assert code == 0
        assert stopped - term_at[0] < GRACE, f"took {stopped - term_at[0]:.2f}s to stop"
        stop_sending.set()

        second = start_runtime(conf).wait_ready()
        wait_until(lambda: ctl.ready().ready, what="ready after restart")
        for i in refused:
            accepted.append(ctl.send(f"m{i}", wait=0).event_id)
        assert len(accepted) == 1000

        def answers() -> Counter[str]:
            return Counter(json.loads(m.data)["correlation_id"] for m in probe.messages())

        try:
            wait_until(lambda: set(accepted) <= set(answers()), timeout=30,
                       what="an answer to every accepted event")
        except AssertionError:
            import apsw
            missing = set(accepted) - set(answers())
            db = apsw.Connection(str(data_dir / "queue" / "broker.db"))
            rows = {r[0]: r[1] for r in db.execute("select id, state from inbox")}
            pend = {r[0] for r in db.execute("select id from pending_events")}
            raise AssertionError(f"{len(missing)} missing; in inbox: "
                                 f"{[(m, rows.get(m), m in pend) for m in list(missing)[:10]]}; "
                                 f"first run log tail:\n" + "\n".join(first.lines[-25:])) from None
        counts = answers()
        assert all(counts[e] == 1 for e in accepted), {e: counts[e] for e in accepted if counts[e] != 1}
        assert second.proc is not None and second.proc.poll() is None
    finally:
        probe.close()


def test_second_sigterm_during_shutdown_ends_it_at_once(
        conf_dir: Path, start_runtime) -> None:
    rt = start_runtime(conf_dir).wait_ready()
    worker = next(a for a in Control(conf_dir).actors() if a.name == "agent-worker-0")
    # A frozen worker makes the orderly shutdown wait for it until its deadline.
    os.kill(worker.pid, signal.SIGSTOP)
    mark = len(rt.lines)
    rt.send_signal(signal.SIGTERM)
    rt.wait_for_log("shutting down", start=mark)
    second = time.monotonic()
    rt.send_signal(signal.SIGTERM)
    assert rt.wait_exit(timeout=GRACE) == 0
    # The orderly path would wait ~2.6 s for the frozen worker; the second signal kills it now.
    assert time.monotonic() - second < 2.0, "the second signal did not cut the shutdown short"
    assert "second signal during shutdown" in rt.stderr
    assert "restarting in" not in rt.stderr, "a worker killed by the shutdown was restarted"
    with pytest.raises(ProcessLookupError):
        os.kill(worker.pid, 0)


def test_sigterm_with_a_frozen_worker_still_exits_0_within_grace(
        conf_dir: Path, start_runtime) -> None:
    rt = start_runtime(conf_dir).wait_ready()
    worker = next(a for a in Control(conf_dir).actors() if a.name == "agent-worker-0")
    os.kill(worker.pid, signal.SIGSTOP)
    started = time.monotonic()
    rt.send_signal(signal.SIGTERM)
    assert rt.wait_exit(timeout=GRACE + 5) == 0
    assert time.monotonic() - started < GRACE


def test_sighup_applies_a_valid_edit_and_keeps_the_old_config_on_an_invalid_one(
        conf_dir: Path, data_dir: Path, start_runtime) -> None:
    rt: RuntimeProcess = start_runtime(conf_dir).wait_ready()
    ctl = Control(conf_dir)
    assert ctl.send("a").reply.text == "echo: a"  # type: ignore[union-attr]
    llm = conf_dir / "llm.yaml"
    llm.write_text(yaml.safe_dump({"providers": {"echo": {"prefix": "ECHO> "}}}))
    mark = len(rt.lines)
    rt.send_signal(signal.SIGHUP)
    rt.wait_for_log("configuration reloaded", start=mark)
    assert ctl.send("b").reply.text == "ECHO> b"  # type: ignore[union-attr]

    llm.write_text("providers: {echo: {prefix: 'x', bogus: 1}}\n")
    mark = len(rt.lines)
    rt.send_signal(signal.SIGHUP)
    rt.wait_for_log("reload rejected", start=mark)
    rt.wait_for_log(r"llm.yaml: \$.providers.echo: unknown field 'bogus'", start=mark)
    assert ctl.send("c").reply.text == "ECHO> c"  # type: ignore[union-attr]
    assert sample(data_dir, "config_reload_rejected_total") == 1.0
    rt.send_signal(signal.SIGTERM)
    assert rt.wait_exit() == 0
