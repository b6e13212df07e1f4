"""/metrics on a running runtime: the SPEC §7 catalogue, fed by the real code paths."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.sidecar.helpers import Sidecar, actors, sidecar_processes, value
from tests.support.runtime import RuntimeProcess, nexo
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

StartRuntime = Callable[..., RuntimeProcess]

# SPEC §7, as sample names in the exposition (counters carry `_total`).
CATALOGUE = [
    "messages_processed_total", "messages_dropped_total", "events_published_total",
    "disk_queue_pending", "disk_queue_enqueued_total", "disk_queue_drained_total",
    "dead_letters_total", "dead_letters", "circuit_breaker_state", "nats_connected",
    "actor_restarts_total", "actor_up", "actor_mailbox_depth", "agent_worker_rss_bytes",
    "agent_turn_seconds_count", "agent_turn_seconds_bucket", "config_reload_rejected_total",
    "nexo_build_info",
]
SECRET = "sk-sidecar-test-4f1e9b27c3"
SENDER = "user-8841-raw-sender-id"


def test_every_catalogue_metric_is_in_a_scrape(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar) -> None:
    conf = sidecar_conf()
    start_runtime(conf).wait_ready()
    assert nexo("--config", str(conf), "send", "cli", "hello").returncode == 0

    def missing() -> list[str]:
        names = {name for name, _, _ in sidecar.scrape()}
        return [m for m in CATALOGUE if m not in names]

    # agent_worker_rss_bytes comes with the worker's first heartbeat answer.
    wait_until(lambda: not missing(), timeout=10, what="every catalogue metric")
    samples = sidecar.scrape()
    assert value(samples, "nexo_build_info", version="0.1.0") == 1.0
    assert value(samples, "actor_up", actor="sidecar") == 1.0
    assert value(samples, "circuit_breaker_state", breaker="nats") == 0.0


def test_processed_count_rss_of_replaced_worker_and_no_secret_labels(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        tmp_path: Path, data_dir: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "vault_key").write_text(SECRET + "\n")
    conf = sidecar_conf(llm={"providers": {
        "echo": {"prefix": "echo: "},
        "vault": {"api_flavor": "echo", "api_key": f"${{file:{secrets / 'vault_key'}}}"}}})
    rt = start_runtime(conf, env={"CONFIG_SECRETS_DIR": str(secrets)}).wait_ready()

    n = 5
    for i in range(n):
        sent = nexo("--config", str(conf), "send", "cli", f"message {i}", "--sender", SENDER)
        assert sent.stdout.strip() == f"echo: message {i}", sent.stderr
    assert value(sidecar.scrape(), "messages_processed_total", agent="kate") == float(n)

    old = actors(conf)["agent-worker-0"]["pid"]
    wait_until(lambda: value(sidecar.scrape(), "agent_worker_rss_bytes", pid=str(old)),
               timeout=10, what="the first worker's RSS sample")
    os.kill(old, signal.SIGKILL)

    def replaced() -> int | None:
        record = actors(conf)["agent-worker-0"]
        return record["pid"] if record["status"] == "running" and record["pid"] != old else None

    new = wait_until(replaced, timeout=30, interval=0.2, what="a replacement agent worker")
    wait_until(lambda: value(sidecar.scrape(), "agent_worker_rss_bytes", pid=str(new)),
               timeout=10, what="the replacement's RSS sample")
    samples = sidecar.scrape()
    rss_pids = {labels.get("pid") for name, labels, _ in samples if name == "agent_worker_rss_bytes"}
    assert rss_pids == {str(new)}, f"samples of dead workers left behind: {rss_pids}"
    assert value(samples, "messages_processed_total", agent="kate") == float(n)

    labels = {v for _, lab, _ in samples for v in lab.values()}
    assert SECRET not in labels and SENDER not in labels
    status, body = sidecar.get("/metrics", port=sidecar.metrics_port)
    assert SECRET not in body and SENDER not in body
    status, body = sidecar.get("/ready")
    assert status == 200 and SECRET not in body
    # The sidecar's processes never see the secret: not in argv, not in env.
    procs = sidecar_processes(data_dir)
    assert procs
    for proc in procs:
        assert SECRET not in " ".join(proc.cmdline())
        assert SECRET not in Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
    assert SECRET not in rt.stderr


def test_gunicorn_processes_write_no_metric_files(
        start_runtime: StartRuntime, sidecar_conf: Callable[..., Path], sidecar: Sidecar,
        data_dir: Path) -> None:
    start_runtime(sidecar_conf()).wait_ready()
    for _ in range(20):
        assert sidecar.get("/metrics", port=sidecar.metrics_port)[0] == 200
        assert sidecar.get("/ready")[0] == 200
    sidecar_pids = {str(p.pid) for p in sidecar_processes(data_dir)}
    assert len(sidecar_pids) >= 3  # master + 2 workers
    files = os.listdir(data_dir / "run" / "metrics")
    file_pids = {m.group(1) for f in files if (m := re.search(r"_(\d+)\.db$", f))}
    assert file_pids, files
    assert not file_pids & sidecar_pids, f"metric files of sidecar processes: {files}"
