"""The compose deployment, run container-like without a Docker engine (SPEC §9).

No engine runs on these machines, so this rebuilds what the image and
docker-compose.yml give the runtime with real kernel features: a private
mount and network namespace (`unshare`), tmpfs secrets at /run/secrets, a
hosts file naming `nats`, read-only config and extensions mounts, a data
volume, a real nats-server on 4222, and the runtime installed like the
image's builder stage does it (Debian's python3, a venv, `pip install .`)
running as uid 10001 with AGENT_ENV=production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nats import nats_server_binary
from tests.support.runtime import REPO

pytestmark = pytest.mark.slow
DRIVER = "tests.support.container_smoke"
APP = Path("/app")


def require_root_and_unshare() -> None:
    """This test fails (never skips) where the environment refuses what it needs."""
    if os.geteuid() != 0:
        pytest.fail("the container smoke test needs root (unshare --mount --net, mounts, setuid)")
    probe = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"unshare --mount --net is refused here: {probe.stderr.strip()}")


@pytest.fixture(scope="module")
def stack_venv(image_venv: Path) -> Iterator[Path]:
    """The image-like venv, plus an empty /app mount point for the driver's tmpfs."""
    require_root_and_unshare()
    made_app = not APP.exists()
    APP.mkdir(exist_ok=True)
    try:
        yield image_venv
    finally:
        if made_app:
            APP.rmdir()


def run_stack(venv: Path, **options: Any) -> dict[str, Any]:
    # As a module: run as a script, `import nats` would find tests/support/nats.py.
    args = [sys.executable, "-m", DRIVER, "--repo", str(REPO), "--venv", str(venv),
            "--nats-server", nats_server_binary()]
    if "data_owner" in options:
        args += ["--data-owner", str(options["data_owner"])]
    if "missing_secret" in options:
        args += ["--missing-secret", options["missing_secret"]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["unshare", "--mount", "--net", "--", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, f"driver failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_the_stack_serves_answers_logs_json_without_secrets_and_stops_in_5s(stack_venv: Path) -> None:
    report = run_stack(stack_venv)
    logs = "\n".join(report["stderr"])
    assert report["ready_codes"][-1] == 200, logs
    assert report["ready_body"]["ready"] is True
    assert report["health"] == 200
    assert report["metrics_status"] == 200
    assert report["reply"] == "echo: hi from the stack"
    execs = report["exec"]
    for command, (code, out, err) in execs.items():
        assert code == 0, (command, err)
        assert not any(secret in out + err for secret in report["secrets"]), command
    assert "hello" in execs["ext list"][1] and " ok " in execs["ext list"][1]
    assert "(no dead letters)" in execs["dlq list"][1]
    assert execs["send cli hello"][1].strip() == "echo: hello"
    assert "broker: nats" in execs["status"][1]
    assert report["exit_code"] == 0, logs
    assert report["stop_seconds"] < 5.0
    lines = [line for line in report["stderr"] if line.strip()]
    assert lines, "the runtime logged nothing"
    for line in lines:
        doc = json.loads(line)  # every line is one JSON object
        assert isinstance(doc, dict) and "msg" in doc
    for secret in report["secrets"]:
        assert secret not in logs and secret not in report["stdout"]


def test_a_root_owned_data_volume_fails_at_boot_with_the_chown_to_run(stack_venv: Path) -> None:
    report = run_stack(stack_venv, data_owner=0)
    assert report["exit_code"] == 1
    messages = [json.loads(line)["msg"] for line in report["stderr"] if line.strip()]
    assert ("data directory /app/data is not writable by uid 10001 (owner uid 0, mode 0755); "
            "on the host: sudo chown -R 10001 ./data") in messages
    assert not any("Traceback" in line for line in report["stderr"])


def test_a_missing_secret_fails_at_boot_naming_the_file_to_create(stack_venv: Path) -> None:
    report = run_stack(stack_venv, missing_secret="google_client_secret")
    assert report["exit_code"] == 1
    logs = "\n".join(json.loads(line)["msg"] for line in report["stderr"] if line.strip())
    assert ("llm.yaml: providers.google.client_secret: ${file:/run/secrets/google_client_secret}: "
            "no such file — create ./secrets/google_client_secret.txt before docker compose up") in logs
    for name, secret in (("minimax_api_key", "mm-key"),):
        assert secret not in logs, name
