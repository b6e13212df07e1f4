"""Boot step 2 (SPEC §6): is this host fit to run the runtime?

The reference runtime let an unwritable data volume surface as SQLite's
cryptic `readonly database`; here it is caught before anything opens, with
the owner, the mode and the command that fixes it.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from nexo_actors.config.load import Config
from nexo_actors.errors import PreflightError

log = logging.getLogger(__name__)

# docker-compose.yml bind-mounts the host's ./data at /app/data, so that is
# the host path an operator must chown.
HOST_PATH_HINTS = {"/app/data": "./data"}
SHM_PATH = Path("/dev/shm")


@dataclass(frozen=True)
class PreflightReport:
    data_dir: Path
    free_disk_bytes: int
    shm_bytes: int | None
    shm_small: bool


def host_path_hint(path: Path) -> str:
    return HOST_PATH_HINTS.get(str(path), str(path))


def _not_writable(path: Path, data_dir: Path) -> PreflightError:
    uid = os.getuid()
    try:
        st = path.stat()
        detail = f" (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
    except OSError:
        detail = ""
    host = host_path_hint(data_dir)
    if path != data_dir and not path.is_relative_to(data_dir):
        # `path` is an existing parent: the data directory itself is missing.
        return PreflightError(
            f"cannot create data directory {data_dir}: {path} is not writable by uid {uid}"
            f"{detail}; on the host: sudo mkdir -p {host} && sudo chown -R {uid} {host}"
        )
    label = f"data directory {path}" if path == data_dir else f"{path} in the data directory"
    return PreflightError(
        f"{label} is not writable by uid {uid}{detail}; on the host: sudo chown -R {uid} {host}"
    )


def ensure_writable_dir(path: Path, data_dir: Path) -> None:
    """Create `path` if needed and prove this uid can create files in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        parent = next((p for p in path.parents if p.exists()), path)
        raise _not_writable(parent, data_dir) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise PreflightError(
                f"data directory {path} is on a read-only filesystem; mount it read-write "
                "(in docker-compose.yml: ./data:/app/data without :ro)"
            ) from None
        raise PreflightError(f"cannot create data directory {path}: {exc.strerror}") from None
    probe = path / f".nexo-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        probe.unlink()
    except PermissionError:
        raise _not_writable(path, data_dir) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise PreflightError(
                f"data directory {path} is on a read-only filesystem; mount it read-write "
                "(in docker-compose.yml: ./data:/app/data without :ro)"
            ) from None
        raise PreflightError(f"cannot write in data directory {path}: {exc.strerror}") from None


def shm_size(path: Path = SHM_PATH) -> int | None:
    try:
        return shutil.disk_usage(path).total
    except OSError:
        return None


def run_preflight(config: Config) -> PreflightReport:
    """Check data dirs, free disk and /dev/shm; raise PreflightError if unfit."""
    data_dir = config.data_dir
    ensure_writable_dir(data_dir, data_dir)
    for sub in (config.run_dir, config.queue_db.parent):
        # The queue may live outside the data dir (broker.persistence.path);
        # then it is its own root in messages.
        ensure_writable_dir(sub, data_dir if sub.is_relative_to(data_dir) else sub)
    free = shutil.disk_usage(data_dir).free
    minimum = config.runtime.preflight.min_free_disk
    if free < minimum:
        raise PreflightError(
            f"only {free // (1 << 20)} MiB free on the filesystem of {data_dir}, below "
            f"runtime.preflight.min_free_disk ({minimum // (1 << 20)} MiB); free some space"
        )
    shm = shm_size()
    small = bool(config.browser.enabled and shm is not None and shm < config.runtime.preflight.min_shm)
    if small:
        log.warning(
            "/dev/shm is small for Chromium; the browser will run with --disable-dev-shm-usage "
            "(in docker-compose.yml set shm_size: 1gb)",
            extra={"shm_bytes": shm, "min_shm_bytes": int(config.runtime.preflight.min_shm)},
        )
    log.info("preflight ok", extra={"data_dir": str(data_dir), "free_disk_mb": free >> 20,
                                    "shm_mb": None if shm is None else shm >> 20})
    return PreflightReport(data_dir=data_dir, free_disk_bytes=free, shm_bytes=shm, shm_small=small)
