"""Talking to a running sidecar over real HTTP, and to the runtime through the CLI."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.support.runtime import nexo

Samples = list[tuple[str, dict[str, str], float]]


@dataclass(frozen=True)
class Sidecar:
    """The two ports a test configured; every call is one real HTTP request."""

    health_port: int
    metrics_port: int

    @property
    def binds(self) -> dict[str, str]:
        return {"health_bind": f"127.0.0.1:{self.health_port}",
                "metrics_bind": f"127.0.0.1:{self.metrics_port}"}

    def get(self, path: str, port: int | None = None, timeout: float = 5.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.health_port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def ready(self, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/ready", timeout=timeout)
        return status, json.loads(body)

    def health(self, timeout: float = 5.0) -> int:
        return self.get("/health", timeout=timeout)[0]

    def scrape(self) -> Samples:
        status, body = self.get("/metrics", port=self.metrics_port)
        assert status == 200, f"/metrics answered {status}: {body[:200]}"
        return [(s.name, dict(s.labels), s.value)
                for family in text_string_to_metric_families(body) for s in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample `name{labels...}` (extra labels allowed), or None."""
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def reasons(document: dict[str, Any], key: str = "reasons") -> list[tuple[str, str]]:
    return [(r["subsystem"], r["detail"]) for r in document.get(key, [])]


def actors(conf: Path) -> dict[str, dict[str, Any]]:
    """`nexo actors --json`, by actor name."""
    result = nexo("--config", str(conf), "actors", "--json", timeout=20)
    assert result.returncode == 0, result.stderr
    return {a["name"]: a for a in json.loads(result.stdout)["actors"]}


def port_free(port: int) -> bool:
    """True if a listener could bind 127.0.0.1:port now (as gunicorn would, SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def sidecar_processes(data_dir: Path) -> list[psutil.Process]:
    """Every gunicorn master or worker launched for the runtime whose data lives in `data_dir`."""
    marker = str(data_dir / "run" / "nexo.sock")
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "nexo_actors.sidecar.serve" in cmdline and marker in cmdline:
            found.append(proc)
    return found
