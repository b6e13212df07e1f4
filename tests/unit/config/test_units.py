"""Durations and sizes are parsed once, at load, into seconds and bytes (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexo_actors.config import load_config
from nexo_actors.config.units import Duration, Size, parse_duration, parse_size
from nexo_actors.errors import ConfigErrors
from tests.support.confdir import write_conf


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("30s", 30.0), ("24h", 86400.0), ("100ms", 0.1), ("0.2s", 0.2),
    ("1d", 86400.0), ("45", 45.0), (300, 300.0), (1.5, 1.5), ("5 m", 300.0),
])
def test_duration_parses_to_seconds(text: object, seconds: float) -> None:
    value = parse_duration(text)
    assert isinstance(value, Duration)
    assert value == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5x", "5M", "-1s", "ms", "", "five minutes", "1e3", True, None, -3,
                                  [5], float("nan"), float("inf")])
def test_bad_duration_is_an_error(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "nbytes"), [
    ("4MB", 4 << 20), ("512MiB", 512 << 20), ("64KB", 64 << 10), ("1GiB", 1 << 30),
    ("1gb", 1 << 30), ("4096", 4096), (4096, 4096), ("4B", 4), ("1.5GB", 3 << 29), ("2 TB", 2 << 40),
    ("8k", 8 << 10),
])
def test_size_parses_to_bytes(text: object, nbytes: int) -> None:
    value = parse_size(text)
    assert isinstance(value, Size)
    assert value == nbytes


@pytest.mark.parametrize("text", ["4PB", "4 bananas", "MB", "", "4i", "4iB", "-4MB", 4.5, -1, True,
                                  None])
def test_bad_size_is_an_error(text: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_loaded_durations_and_sizes_are_seconds_and_bytes(tmp_path: Path) -> None:
    conf = write_conf(
        tmp_path / "conf", tmp_path / "data",
        agents=[{"id": "kate", "model": {"provider": "echo", "model": "m"},
                 "heartbeat": {"interval": "5m"}}],
        broker={"limits": {"max_payload": "4MB"}, "flush_interval": "100ms"},
        memory={"short_term": {"session_ttl": "24h"}},
        runtime={"shutdown": {"grace": "30s"}, "preflight": {"min_shm": "512MiB"}},
    )
    config = load_config(conf, env={}, cwd=tmp_path)
    assert config.agents[0].heartbeat.interval == 300.0
    assert config.broker.flush_interval == pytest.approx(0.1)
    assert config.broker.limits.max_payload == 4 * 1024 * 1024
    assert config.memory.short_term.session_ttl == 86400.0
    assert config.runtime.shutdown.grace == 30.0
    assert config.runtime.preflight.min_shm == 512 * 1024 * 1024


def test_bad_duration_and_size_in_files_are_errors_with_their_paths(tmp_path: Path) -> None:
    conf = write_conf(
        tmp_path / "conf", tmp_path / "data",
        broker={"limits": {"max_payload": "4 megs"}},
        memory={"short_term": {"session_ttl": "1 fortnight"}},
        runtime={"shutdown": {"grace": "5parsecs"}},
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(conf, env={}, cwd=tmp_path)
    found = {(e.file, e.path): e.detail for e in info.value.errors}
    assert set(found) == {
        ("conf/broker.yaml", "$.broker.limits.max_payload"),
        ("conf/memory.yaml", "$.short_term.session_ttl"),
        ("conf/runtime.yaml", "$.shutdown.grace"),
    }
    assert found[("conf/broker.yaml", "$.broker.limits.max_payload")].startswith(
        "invalid size '4 megs'")
    assert found[("conf/memory.yaml", "$.short_term.session_ttl")].startswith(
        "invalid duration '1 fortnight'")
    assert found[("conf/runtime.yaml", "$.shutdown.grace")].startswith("invalid duration '5parsecs'")
