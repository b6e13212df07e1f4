"""Run the compose deployment's runtime as a container would, without Docker.

Executed as root inside `unshare --mount --net` by
tests/integration/deploy/test_container_smoke.py. It rebuilds what
docker-compose.yml gives the `nexo` service, with real mounts:

* a private network namespace with only `lo` up (ports 4222/8080/9090 are
  free whatever runs on the host) and a hosts file mapping `nats` to it;
* a tmpfs on /run/secrets holding the secret files (mode 0400, uid 10001);
* a tmpfs on /app with `config` and `extensions` bind-mounted read-only from
  the repository and `data` owned by the container user (or by root, for
  the ownership test);
* a real nats-server on 4222, and `nexo --config /app/config/docker` run
  from an image-like venv (Debian's python3, `pip install .`) as uid 10001
  with `AGENT_ENV=production`.

It prints one JSON document describing what happened; the test asserts on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nats

UID = 10001
SECRETS = {
    "minimax_api_key": "mm-key-5b1c0f2e9a7d4c63",
    "minimax_group_id": "mm-group-771203",
    "google_client_id": "gc-id-0a9b8c7d.apps.example",
    "google_client_secret": "gc-secret-f3e2d1c0b9a8",
}


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def setup(repo: Path, data_owner: int, missing_secret: str | None) -> None:
    sh("ip", "link", "set", "lo", "up")
    Path("/run/secrets").mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run/secrets")
    for name, value in SECRETS.items():
        if name == missing_secret:
            continue
        path = Path("/run/secrets") / name
        path.write_text(value + "\n")
        os.chown(path, UID, UID)
        path.chmod(0o400)
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/app")
    hosts = Path("/app/.hosts")
    hosts.write_text("127.0.0.1 localhost nats\n::1 localhost\n")
    sh("mount", "--bind", str(hosts), "/etc/hosts")
    for name, source in (("config", repo / "conf"), ("extensions", repo / "extensions")):
        target = Path("/app") / name
        target.mkdir()
        sh("mount", "--bind", "-o", "ro", str(source), str(target))
        sh("mount", "-o", "remount,bind,ro", str(target))
    data = Path("/app/data")
    data.mkdir(mode=0o755)
    os.chown(data, data_owner, data_owner)


def start_nats(binary: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/app/nats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for raw in proc.stderr:
        if b"Server is ready" in raw:
            return proc
    raise RuntimeError("nats-server did not start")


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError as exc:
        return 0, repr(exc)


async def ask_nats() -> str:
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        for _ in range(100):
            try:
                msg = await nc.request("plugin.inbound.cli", b'{"text": "hi from the stack"}',
                                       timeout=1)
                return str(json.loads(msg.data)["payload"]["text"])
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.1)
        return ""
    finally:
        await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True, type=Path)
    parser.add_argument("--venv", required=True, type=Path)
    parser.add_argument("--nats-server", required=True)
    parser.add_argument("--data-owner", type=int, default=UID)
    parser.add_argument("--missing-secret", default=None)
    args = parser.parse_args()
    setup(args.repo, args.data_owner, args.missing_secret)
    broker = start_nats(args.nats_server)
    # The environment docker-compose.yml gives the service.
    env = {"PATH": f"{args.venv}/bin:/usr/bin:/bin", "AGENT_ENV": "production", "LOG_LEVEL": "info",
           "HOME": "/app", "PYTHONUNBUFFERED": "1", "NEXO_CONFIG": "/app/config/docker"}
    as_user = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
    # The image's entrypoint is `dumb-init -- nexo`; compose's command selects conf/docker.
    runtime = subprocess.Popen(
        [*as_user, str(args.venv / "bin" / "nexo"), "--config", "/app/config/docker"],
        cwd="/app", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    report: dict[str, Any] = {"ready_codes": [], "health": None, "reply": None}
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and runtime.poll() is None:
            code, body = http_status("http://127.0.0.1:8080/ready")
            if not report["ready_codes"] or report["ready_codes"][-1] != code:
                report["ready_codes"].append(code)
            if code == 200:
                report["ready_body"] = json.loads(body)
                break
            time.sleep(0.05)
        if runtime.poll() is None:
            report["health"] = http_status("http://127.0.0.1:8080/health")[0]
            report["reply"] = asyncio.run(ask_nats())
            report["metrics_status"] = http_status("http://127.0.0.1:9090/metrics")[0]
            # The README's `docker compose exec nexo nexo ...` commands: same user,
            # same environment, no --config.
            report["exec"] = {}
            for command in (["ext", "list"], ["dlq", "list"], ["send", "cli", "hello"],
                            ["status"]):
                done = subprocess.run([*as_user, str(args.venv / "bin" / "nexo"), *command],
                                      cwd="/app", env=env, capture_output=True, text=True,
                                      timeout=30)
                report["exec"][" ".join(command)] = [done.returncode, done.stdout, done.stderr]
            started = time.monotonic()
            runtime.send_signal(signal.SIGTERM)
            runtime.wait(15)
            report["stop_seconds"] = round(time.monotonic() - started, 3)
        else:
            runtime.wait(5)
    finally:
        if runtime.poll() is None:
            runtime.kill()
        out, err = runtime.communicate(timeout=15)
        broker.kill()
        broker.wait()
    report["exit_code"] = runtime.returncode
    report["stderr"] = err.decode(errors="replace").splitlines()
    report["stdout"] = out.decode(errors="replace")
    report["secrets"] = list(SECRETS.values())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
