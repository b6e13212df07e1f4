"""Shared fixtures: a real nats-server, config dirs, runtime processes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.confdir import write_conf
from tests.support.nats import NatsServer
from tests.support.runtime import REPO, RuntimeProcess

DEBIAN_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def image_venv() -> Iterator[Path]:
    """The package installed as the image's builder stage does it, usable by any uid.

    Debian's python3, a venv in a world-readable directory, `pip install` of a
    copy of the sources (no build byproducts land in the checkout). Tests that
    run the runtime as another uid use it: the checkout and the test venv may
    sit where that uid cannot read (a private home, a 0700 temp dir).
    """
    if not Path(DEBIAN_PYTHON).exists():
        pytest.fail(f"{DEBIAN_PYTHON} (Debian's python3, the image's interpreter) is missing")
    root = Path(tempfile.mkdtemp(prefix="nexo-image-venv-", dir="/tmp"))
    root.chmod(0o755)
    venv = root / "venv"
    try:
        subprocess.run([DEBIAN_PYTHON, "-m", "venv", str(venv)], check=True)
        src = root / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "data", "tests", "bench", "__pycache__", "*.egg-info", "build"))
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-cache-dir", str(src)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running nats-server on a free loopback port; stop()/start()/kill() it to test outages."""
    server = NatsServer(store_dir=tmp_path / "nats-store").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def conf_dir(tmp_path: Path, data_dir: Path) -> Path:
    """The default test config: agent kate on channel cli, local bus, sidecar off."""
    return write_conf(tmp_path / "conf", data_dir)


@pytest.fixture
def runtimes() -> Iterator[list[RuntimeProcess]]:
    """Collects runtime processes a test starts; every one is stopped at teardown."""
    started: list[RuntimeProcess] = []
    try:
        yield started
    finally:
        for rt in started:
            rt.stop()


@pytest.fixture
def start_runtime(runtimes: list[RuntimeProcess]):  # type: ignore[no-untyped-def]
    """start_runtime(conf_dir, **kw) -> a started RuntimeProcess, stopped at teardown."""

    def start(config_dir: Path, **kwargs) -> RuntimeProcess:  # type: ignore[no-untyped-def]
        rt = RuntimeProcess(config_dir, **kwargs)
        runtimes.append(rt)
        return rt.start()

    return start
