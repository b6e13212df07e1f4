"""Boot as a real process (SPEC §6): the unwritable-data-dir message for a
non-root uid, and a normal boot that runs until SIGTERM/SIGINT and exits 0.

The suite runs as root, whose writes nothing refuses, so the preflight
failure is provoked as uid 65534 (nobody) against a root-owned 0755 data dir.
That uid runs the package from the image-like venv (tests/conftest.py
`image_venv`): the checkout and its .venv may sit where it cannot read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.confdir import write_conf

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A root-owned 0755 directory that other uids can read (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="nexo-preflight-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_as(uid: int, venv: Path, config_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    require_root()
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_ENV", "PYTHONPATH")}
    env.update({"LOG_LEVEL": "info", "HOME": str(cwd)})
    return subprocess.run([str(venv / "bin" / "nexo"), "--config", str(config_dir), "start"],
                          cwd=cwd, env=env, user=uid, group=uid, extra_groups=[],
                          capture_output=True, text=True, timeout=60)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to run the runtime as another uid (the suite runs as root in CI)")


def test_root_owned_data_dir_is_refused_for_an_unprivileged_uid(shared_dir: Path,
                                                                 image_venv: Path) -> None:
    data = shared_dir / "data"
    data.mkdir()
    data.chmod(0o755)
    conf = write_conf(shared_dir / "conf", data)
    assert data.stat().st_uid == 0
    result = run_as(NOBODY, image_venv, conf, shared_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert (f"data directory {data} is not writable by uid {NOBODY} (owner uid 0, mode 0755); "
            f"on the host: sudo chown -R {NOBODY} {data}") in result.stderr
    assert "Traceback" not in output
    assert "readonly database" not in output
    assert list(data.iterdir()) == []
    assert "nexo is running" not in output


def test_missing_data_dir_under_a_root_owned_parent_says_it_cannot_be_created(
        shared_dir: Path, image_venv: Path) -> None:
    parent = shared_dir / "srv"
    parent.mkdir()
    parent.chmod(0o755)
    data = parent / "data"
    conf = write_conf(shared_dir / "conf", data)
    result = run_as(NOBODY, image_venv, conf, shared_dir)
    assert result.returncode == 1, result.stderr
    assert (f"cannot create data directory {data}: {parent} is not writable by uid {NOBODY} "
            f"(owner uid 0, mode 0755); on the host: sudo mkdir -p {data} && "
            f"sudo chown -R {NOBODY} {data}") in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not data.exists()


@pytest.mark.slow
def test_data_dir_owned_by_the_uid_passes_preflight(shared_dir: Path, image_venv: Path,
                                                    start_runtime) -> None:  # type: ignore[no-untyped-def]
    data = shared_dir / "data"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    conf = write_conf(shared_dir / "conf", data)
    require_root()
    rt = start_runtime(conf, cwd=shared_dir, user=NOBODY, env={"HOME": str(shared_dir)},
                       argv=[str(image_venv / "bin" / "nexo"), "--config", str(conf), "start"])
    rt.wait_ready()
    rt.send_signal(signal.SIGTERM)
    assert rt.wait_exit(10) == 0, rt.stderr
    assert (data / "nexo.lock").stat().st_uid == NOBODY


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_start_runs_until_signalled_and_exits_0(conf_dir: Path, start_runtime, sig: int) -> None:  # type: ignore[no-untyped-def]
    rt = start_runtime(conf_dir)
    rt.wait_ready()
    # Still running a moment after boot: it does not stop on its own.
    with pytest.raises(subprocess.TimeoutExpired):
        rt.proc.wait(timeout=1.0)
    rt.send_signal(sig)
    assert rt.wait_exit(10) == 0, rt.stderr
    assert "Traceback" not in rt.stderr
    rt.wait_for_log(r"nexo stopped", timeout=1)
