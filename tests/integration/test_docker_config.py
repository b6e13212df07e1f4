"""conf/docker is a valid configuration given the compose stack's secrets (SPEC §2, §9).

The docker config reads absolute `/run/secrets/<name>` paths, as it does in
the container. Each check runs `bin/nexo check-config` in a private mount
namespace with a tmpfs on /run/secrets holding the test's secret files, so
the host's /run/secrets is never written.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NEXO = REPO / "bin" / "nexo"
DOCKER_CONF = REPO / "conf" / "docker"
SECRETS_MOUNT = Path("/run/secrets")
# Distinctive values, so a leak into any output is unmistakable.
SECRETS = {
    "minimax_api_key": "mmk-TEST-4f1c9e2a7b",
    "minimax_group_id": "mmg-TEST-8d3b6a0c51",
    "google_client_id": "gci-TEST-2e7f5a9d14.apps.googleusercontent.com",
    "google_client_secret": "gcs-TEST-9a4d1c7e3f",
}
# Where each secret lands in `check-config --print`.
SECRET_FIELDS = {
    "minimax_api_key": ("minimax", "api_key"),
    "minimax_group_id": ("minimax", "group_id"),
    "google_client_id": ("google", "client_id"),
    "google_client_secret": ("google", "client_secret"),
}
MOUNT_FAILED = 97


@pytest.fixture(scope="module")
def private_mounts() -> None:
    """Fail (never skip) when this environment cannot give a process its own mounts."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare(1) is not installed (util-linux); these tests need a private "
                    "mount namespace to provide /run/secrets")
    # The mount point must exist on the host; creating it is harmless.
    SECRETS_MOUNT.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs tmpfs {SECRETS_MOUNT} && touch {SECRETS_MOUNT}/.nexo-probe"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        pytest.fail("the environment refuses a private mount namespace "
                    f"(unshare --mount; mount -t tmpfs on {SECRETS_MOUNT}): exit "
                    f"{probe.returncode}: {probe.stderr.strip()}")
    assert not (SECRETS_MOUNT / ".nexo-probe").exists(), "the probe mount leaked to the host"


@pytest.fixture
def secret_files(tmp_path: Path) -> Iterator[Path]:
    """A directory with one file per seed secret, as ./secrets/<name>.txt would hold."""
    d = tmp_path / "secrets"
    d.mkdir()
    for name, value in SECRETS.items():
        f = d / name
        f.write_text(value + "\n", encoding="utf-8")
        f.chmod(0o400)
    yield d


def check_config(secret_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`bin/nexo --config conf/docker check-config ARGS` with secret_dir's files at /run/secrets."""
    command = shlex.join([str(NEXO), "--config", str(DOCKER_CONF), "check-config", *args])
    script = (
        f"mount -t tmpfs -o mode=0755 tmpfs {SECRETS_MOUNT} || exit {MOUNT_FAILED}; "
        f"cp -R {shlex.quote(str(secret_dir))}/. {SECRETS_MOUNT}/ || exit {MOUNT_FAILED}; "
        f"exec {command}"
    )
    env = dict(os.environ)
    for var in ("AGENT_ENV", "CONFIG_SECRETS_DIR"):
        env.pop(var, None)
    # Run from the repository root so files are named conf/docker/<file>.
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    if result.returncode == MOUNT_FAILED:
        pytest.fail(f"could not provide {SECRETS_MOUNT} in a private mount namespace: "
                    f"{result.stderr.strip()}")
    return result


def test_docker_config_is_valid_given_its_secret_files(
        private_mounts: None, secret_files: Path) -> None:
    result = check_config(secret_files)
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert "broker nats" in result.stdout


def test_missing_secret_file_names_the_file_to_create(
        private_mounts: None, secret_files: Path) -> None:
    (secret_files / "minimax_api_key").unlink()
    result = check_config(secret_files)
    assert result.returncode == 1
    assert ("conf/docker/llm.yaml: providers.minimax.api_key: "
            "${file:/run/secrets/minimax_api_key}: no such file — create "
            "./secrets/minimax_api_key.txt before docker compose up") in result.stderr
    # That is the only problem: the other secrets were found and the rest is valid.
    assert "configuration is invalid (1 error)" in result.stderr, result.stderr


def test_print_masks_every_secret(private_mounts: None, secret_files: Path) -> None:
    result = check_config(secret_files, "--print")
    assert result.returncode == 0, result.stderr
    for name, value in SECRETS.items():
        assert value not in result.stdout, f"{name} leaked to stdout"
        assert value not in result.stderr, f"{name} leaked to stderr"
    dump = json.loads(result.stdout)
    providers = dump["llm"]["providers"]
    for name, (provider, field) in SECRET_FIELDS.items():
        assert providers[provider][field] == "***", f"{name} at {provider}.{field} is not masked"
    # The non-secret parts are shown as they are.
    assert dump["broker"]["url"] == "nats://nats:4222"
    assert providers["minimax"]["base_url"] == "https://api.minimax.io/anthropic"
