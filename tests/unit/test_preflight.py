"""Boot step 2 (SPEC §6) in-process: what preflight creates, and the limits
it enforces. The unwritable-data-dir case needs a non-root uid and lives in
tests/integration/test_preflight.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nexo_actors.config import load_config
from nexo_actors.errors import PreflightError
from nexo_actors.preflight import ensure_writable_dir, host_path_hint, run_preflight, shm_size
from tests.support.confdir import write_conf


def test_preflight_creates_data_run_and_queue_dirs(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    conf = write_conf(tmp_path / "conf", data)
    report = run_preflight(load_config(conf, env={}, cwd=tmp_path))
    assert report.data_dir == data
    assert (data / "run").is_dir()
    assert (data / "queue").is_dir()
    assert report.free_disk_bytes > 0
    assert list(data.glob(".nexo-write-test-*")) == []


def test_queue_outside_the_data_dir_is_created_too(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      broker={"persistence": {"path": str(tmp_path / "q" / "broker.db")}})
    run_preflight(load_config(conf, env={}, cwd=tmp_path))
    assert (tmp_path / "q").is_dir()


def test_too_little_free_disk_is_refused(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      runtime={"preflight": {"min_free_disk": "1000000TB"}})
    with pytest.raises(PreflightError) as info:
        run_preflight(load_config(conf, env={}, cwd=tmp_path))
    message = str(info.value)
    assert f"free on the filesystem of {tmp_path / 'data'}" in message
    assert "runtime.preflight.min_free_disk" in message


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("oops")
    conf = write_conf(tmp_path / "conf", tmp_path / "data")
    with pytest.raises(PreflightError, match=f"cannot create data directory {tmp_path / 'data'}"):
        run_preflight(load_config(conf, env={}, cwd=tmp_path))


@pytest.mark.skipif(shm_size() is None, reason="no /dev/shm on this host")
def test_small_dev_shm_with_browser_enabled_warns(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", runtime={"preflight": {
        "min_shm": "1000000TB"}}, extra_files={"plugins/browser.yaml": "browser: {enabled: true}\n"})
    caplog.set_level(logging.INFO, logger="nexo_actors.preflight")
    report = run_preflight(load_config(conf, env={}, cwd=tmp_path))
    assert report.shm_small is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--disable-dev-shm-usage" in warnings[0]


def test_small_dev_shm_without_browser_is_fine(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      runtime={"preflight": {"min_shm": "1000000TB"}})
    caplog.set_level(logging.INFO, logger="nexo_actors.preflight")
    report = run_preflight(load_config(conf, env={}, cwd=tmp_path))
    assert report.shm_small is False
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_ensure_writable_dir_is_idempotent(tmp_path: Path) -> None:
    ensure_writable_dir(tmp_path / "d", tmp_path / "d")
    ensure_writable_dir(tmp_path / "d", tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_container_data_path_hints_the_host_bind_mount() -> None:
    assert host_path_hint(Path("/app/data")) == "./data"
    assert host_path_hint(Path("/srv/nexo/data")) == "/srv/nexo/data"
