"""Logging (SPEC §8, §2): level from LOG_LEVEL / RUST_LOG, JSON lines in
production, and a scrubber that never lets a registered secret through."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from nexo_actors import logs

SECRET = "log-secret-4e8f1b2a"


@pytest.mark.parametrize(("env", "level"), [
    ({}, logging.INFO),
    ({"LOG_LEVEL": "debug"}, logging.DEBUG),
    ({"LOG_LEVEL": "DEBUG"}, logging.DEBUG),
    ({"LOG_LEVEL": "info"}, logging.INFO),
    ({"LOG_LEVEL": "warn"}, logging.WARNING),
    ({"LOG_LEVEL": "warning"}, logging.WARNING),
    ({"LOG_LEVEL": "error"}, logging.ERROR),
    ({"LOG_LEVEL": "trace"}, logging.DEBUG),
    ({"LOG_LEVEL": "off"}, logging.CRITICAL + 10),
    ({"LOG_LEVEL": "nonsense"}, logging.INFO),
    ({"RUST_LOG": "debug"}, logging.DEBUG),
    ({"RUST_LOG": "warn,hyper=info"}, logging.WARNING),
    ({"RUST_LOG": "nexo=debug,info"}, logging.DEBUG),
    ({"RUST_LOG": "info,nexo=debug"}, logging.DEBUG),
    ({"RUST_LOG": "info,nexo_actors=error"}, logging.ERROR),
    ({"RUST_LOG": "other=debug"}, logging.INFO),
    ({"LOG_LEVEL": "error", "RUST_LOG": "debug"}, logging.ERROR),
    ({"LOG_LEVEL": "", "RUST_LOG": "debug"}, logging.DEBUG),
])
def test_parse_level(env: dict[str, str], level: int) -> None:
    assert logs.parse_level(env) == level


@pytest.mark.parametrize(("value", "expected"), [
    ("production", True), ("prod", True), ("Production ", True), ("dev", False), ("", False)])
def test_is_production(value: str, expected: bool) -> None:
    assert logs.is_production({"AGENT_ENV": value}) is expected


@pytest.fixture
def secrets_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """register_secrets is process-wide; put the registry back after the test."""
    monkeypatch.setattr(logs, "_secrets", logs._secrets)


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing through a real StreamHandler into a StringIO."""
    formatter: logging.Formatter = request.param()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test_logs.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, buf
    finally:
        logger.removeHandler(handler)


BOTH = pytest.mark.parametrize("capture", [logs.TextFormatter, logs.JsonFormatter], indirect=True,
                               ids=["text", "json"])


@BOTH
def test_registered_secret_is_masked_in_log_lines(
        secrets_restored: None, capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = capture
    logger.info("before %s", SECRET)
    logs.register_secrets([SECRET])
    logger.info("connecting with key %s", SECRET, extra={"api_key": SECRET, "n": 1})
    try:
        raise RuntimeError(f"auth failed for {SECRET}")
    except RuntimeError:
        logger.exception("boom")
    lines = buf.getvalue()
    before, after = lines.split("before", 1)[1].split("\n", 1)
    assert SECRET in before  # not registered yet: the scrubber is what masks it
    assert SECRET not in after
    assert "connecting with key ***" in after
    assert after.count("***") >= 3


@BOTH
def test_secret_with_quotes_and_backslashes_is_masked(
        secrets_restored: None, capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = capture
    secret = 'p"4ss\\w0rd'
    logs.register_secrets([secret])
    logger.warning("login %s", secret, extra={"detail": f"pw={secret}"})
    out = buf.getvalue()
    assert secret not in out
    assert json.dumps(secret)[1:-1] not in out
    assert "login ***" in out


@pytest.mark.parametrize("capture", [logs.JsonFormatter], indirect=True)
def test_json_formatter_writes_one_object_per_line_with_fields(
        capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = capture
    logger.info("hello\nworld", extra={"agent": "kate", "event_id": "e1", "n": 2, "obj": [1]})
    logger.error("second")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["msg"] == "hello\nworld"
    assert first["level"] == "info"
    assert first["logger"].startswith("test_logs.")
    assert (first["agent"], first["event_id"], first["n"], first["obj"]) == ("kate", "e1", 2, "[1]")
    assert json.loads(lines[1])["level"] == "error"


@pytest.mark.parametrize("capture", [logs.TextFormatter], indirect=True)
def test_text_formatter_appends_fields(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = capture
    logger.info("ready", extra={"agent": "kate"})
    line = buf.getvalue()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO    test_logs\.\S+: ready agent=kate\n", line), line


@pytest.fixture
def root_logger_restored() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


@pytest.mark.parametrize(("env", "formatter", "level"), [
    ({"AGENT_ENV": "production", "LOG_LEVEL": "debug"}, logs.JsonFormatter, logging.DEBUG),
    ({"AGENT_ENV": "prod", "RUST_LOG": "warn"}, logs.JsonFormatter, logging.WARNING),
    ({}, logs.TextFormatter, logging.INFO),
])
def test_setup_logging_picks_format_and_level_from_env(
        root_logger_restored: logging.Logger, env: dict[str, str], formatter: type,
        level: int) -> None:
    logs.setup_logging(env)
    root = root_logger_restored
    assert root.level == level
    assert len(root.handlers) == 1
    assert type(root.handlers[0].formatter) is formatter
    assert logging.getLogger("pykka").level == max(level, logging.WARNING)
