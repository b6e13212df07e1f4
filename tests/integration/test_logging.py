"""Logs of a real `bin/nexo start` (SPEC §8): JSON lines with
AGENT_ENV=production, the level from LOG_LEVEL, no secret in any line."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from tests.support.confdir import write_conf

pytestmark = pytest.mark.slow


def parse_json_lines(stderr: str) -> list[dict[str, object]]:
    lines = stderr.splitlines()
    assert lines, "no log output"
    docs = []
    for line in lines:
        doc = json.loads(line)  # fails the test on any non-JSON line
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


@pytest.mark.parametrize("agent_env", ["production", "prod"])
def test_production_logs_are_one_json_object_per_line(conf_dir: Path, start_runtime,  # type: ignore[no-untyped-def]
                                                      agent_env: str) -> None:
    rt = start_runtime(conf_dir, env={"AGENT_ENV": agent_env})
    rt.wait_ready()
    rt.send_signal(signal.SIGTERM)
    assert rt.wait_exit(10) == 0, rt.stderr
    docs = parse_json_lines(rt.stderr)
    for doc in docs:
        assert {"ts", "level", "logger", "msg"} <= set(doc), doc
    messages = [d["msg"] for d in docs]
    assert "nexo is running" in messages
    assert messages[-1] == "nexo stopped"


def test_production_error_is_a_json_line_too(conf_dir: Path, start_runtime) -> None:  # type: ignore[no-untyped-def]
    holder = start_runtime(conf_dir).wait_ready()
    refused = start_runtime(conf_dir, args=["--no-takeover"], env={"AGENT_ENV": "production"})
    assert refused.wait_exit(30) == 1
    errors = [d for d in parse_json_lines(refused.stderr) if d["level"] == "error"]
    assert len(errors) == 1
    assert f"pid {holder.pid}" in str(errors[0]["msg"])


@pytest.mark.parametrize(("level", "info_shown"), [("info", True), ("warn", False),
                                                    ("error", False)])
def test_log_level_selects_what_is_written(conf_dir: Path, start_runtime, level: str,  # type: ignore[no-untyped-def]
                                           info_shown: bool) -> None:
    start_runtime(conf_dir).wait_ready()
    refused = start_runtime(conf_dir, args=["--no-takeover"],
                            env={"AGENT_ENV": "production", "LOG_LEVEL": level})
    assert refused.wait_exit(30) == 1
    levels = {d["level"] for d in parse_json_lines(refused.stderr)}
    assert "error" in levels
    assert ("info" in levels) is info_shown


def test_rust_log_style_value_selects_the_level(conf_dir: Path, start_runtime) -> None:  # type: ignore[no-untyped-def]
    start_runtime(conf_dir).wait_ready()
    refused = start_runtime(conf_dir, args=["--no-takeover"],
                            env={"AGENT_ENV": "production", "LOG_LEVEL": "",
                                 "RUST_LOG": "error,nexo=info"})
    assert refused.wait_exit(30) == 1
    assert "info" in {d["level"] for d in parse_json_lines(refused.stderr)}


def test_resolved_secret_never_appears_in_runtime_logs(tmp_path: Path, data_dir: Path,  # type: ignore[no-untyped-def]
                                                       start_runtime) -> None:
    secret = "sk-" + uuid.uuid4().hex
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key.txt").write_text(secret)
    # The secret also reaches a logged field: the config path is in "nexo is running".
    (tmp_path / secret).mkdir()
    conf = write_conf(tmp_path / secret / "conf", data_dir, llm={"providers": {"echo": {
        "api_key": "${file:secrets/key.txt}"}}})
    rt = start_runtime(conf, cwd=tmp_path, env={"AGENT_ENV": "production"})
    rt.wait_ready()
    rt.send_signal(signal.SIGTERM)
    assert rt.wait_exit(10) == 0, rt.stderr
    docs = parse_json_lines(rt.stderr)
    running = next(d for d in docs if d["msg"] == "nexo is running")
    assert running["config"] == str(tmp_path / "***" / "conf")
    assert secret not in rt.stderr
