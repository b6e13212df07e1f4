"""The Flask app without gunicorn: routing by port, answers when the runtime is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from nexo_actors.messages import ReadyReply, Reason
from nexo_actors.sidecar.app import AppSettings, create_app, ready_document, unready_document

HEALTH, METRICS = 18080, 19090


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    app = create_app(AppSettings(
        control_socket=tmp_path / "run" / "nexo.sock", metrics_dir=metrics_dir,
        health_ports=frozenset({HEALTH}), metrics_ports=frozenset({METRICS}),
        control_timeout=0.5, health_timeout=0.5))
    return app.test_client()


def get(client: FlaskClient, path: str, port: int) -> tuple[int, str]:
    response = client.get(path, environ_overrides={"SERVER_PORT": str(port)})
    return response.status_code, response.get_data(as_text=True)


def test_each_endpoint_answers_only_on_its_port(client: FlaskClient) -> None:
    assert get(client, "/metrics", HEALTH)[0] == 404
    assert get(client, "/health", METRICS)[0] == 404
    assert get(client, "/ready", METRICS)[0] == 404
    assert get(client, "/nothing", HEALTH)[0] == 404


def test_health_and_ready_say_runtime_not_running_without_a_socket(client: FlaskClient) -> None:
    assert get(client, "/health", HEALTH) == (503, "runtime not running\n")
    response = client.get("/ready", environ_overrides={"SERVER_PORT": str(HEALTH)})
    assert response.status_code == 503
    assert response.get_json() == {
        "ready": False, "agents_running": None, "agents_total": None, "broker": "unknown",
        "reasons": [{"subsystem": "runtime", "detail": "runtime not running"}], "degraded": []}


def test_metrics_is_prometheus_text_even_with_no_files(client: FlaskClient) -> None:
    response = client.get("/metrics", environ_overrides={"SERVER_PORT": str(METRICS)})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.get_data() == b""


def test_ready_document_is_plain_json_without_the_type_tag() -> None:
    reply = ReadyReply(ready=False, agents_running=1, agents_total=2, broker="disconnected",
                       reasons=[Reason(subsystem="broker", detail="nats://h:4222: refused")],
                       degraded=[Reason(subsystem="agent:ops", detail="restarting")])
    assert ready_document(reply) == {
        "ready": False, "agents_running": 1, "agents_total": 2, "broker": "disconnected",
        "reasons": [{"subsystem": "broker", "detail": "nats://h:4222: refused"}],
        "degraded": [{"subsystem": "agent:ops", "detail": "restarting"}]}
    assert unready_document("runtime unresponsive")["reasons"] == [
        {"subsystem": "runtime", "detail": "runtime unresponsive"}]
