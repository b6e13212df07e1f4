"""The control socket and the CLI commands that need a daemon (SPEC §8)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

from tests.support.control import Control
from tests.support.runtime import nexo
from tests.support.waiting import wait_until


def test_control_socket_is_mode_0600(conf_dir: Path, data_dir: Path, start_runtime) -> None:
    start_runtime(conf_dir).wait_ready()
    sock = data_dir / "run" / "nexo.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600


def test_commands_without_a_daemon_say_so_and_exit_1_within_a_second(
        conf_dir: Path, data_dir: Path) -> None:
    for command in (["status"], ["actors"], ["send", "cli", "hi"], ["reload"], ["stop"]):
        started = time.monotonic()
        done = nexo("--config", str(conf_dir), *command)
        elapsed = time.monotonic() - started
        assert done.returncode == 1, (command, done.stderr)
        assert f"no running nexo on {conf_dir}: {data_dir}/run/nexo.sock not found" in done.stderr
        assert "Traceback" not in done.stderr
        assert elapsed < 1.0, f"{command} took {elapsed:.2f}s"


def test_actors_json_lists_every_actor_with_its_state_record(conf_dir: Path, start_runtime) -> None:
    start_runtime(conf_dir).wait_ready()
    # RSS and CPU arrive with the first heartbeat answer.
    wait_until(lambda: Control(conf_dir).actor("agent-worker-0").rss_bytes > 0, what="first pong")
    done = nexo("--config", str(conf_dir), "actors", "--json")
    assert done.returncode == 0, done.stderr
    actors = {a["name"]: a for a in json.loads(done.stdout)["actors"]}
    assert {"supervisor", "queue-store", "broker-bridge", "agent-worker-0", "agent:kate",
            "control-server"} <= set(actors)
    worker = actors["agent-worker-0"]
    for field in ("pid", "status", "mailbox_depth", "restarts", "last_error", "uptime_s",
                  "rss_bytes", "cpu_percent"):
        assert field in worker
    assert worker["status"] == "running"
    assert worker["pid"] > 0 and worker["rss_bytes"] > 0


def test_status_shows_the_worker_sizing_and_its_reasons(conf_dir: Path, start_runtime) -> None:
    start_runtime(conf_dir).wait_ready()
    done = nexo("--config", str(conf_dir), "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["sizing"]["processes"] == 1
    assert "bound by agents" in status["sizing"]["summary"]
    assert status["agents"] == {"kate": "running"}
    assert status["ready"]["ready"] is True


def test_nexo_stop_stops_the_daemon(conf_dir: Path, start_runtime) -> None:
    rt = start_runtime(conf_dir).wait_ready()
    done = nexo("--config", str(conf_dir), "stop")
    assert done.returncode == 0, done.stderr
    assert rt.wait_exit(timeout=10) == 0


def test_nexo_reload_reports_a_rejected_config(conf_dir: Path, start_runtime) -> None:
    start_runtime(conf_dir).wait_ready()
    (conf_dir / "agents.yaml").write_text("agents: [{id: kate, modl: x}]\n")
    done = nexo("--config", str(conf_dir), "reload")
    assert done.returncode == 1
    assert "reload rejected" in done.stderr and "unknown field 'modl'" in done.stderr
    assert Control(conf_dir).send("hi").reply.text == "echo: hi"  # type: ignore[union-attr]
