"""What operator commands need from a config dir, without a full load.

Operator commands (`nexo status`, `nexo reload`, `nexo dlq ...`, `nexo
health`) must work while the files on disk are being edited, even into an
invalid state: they need only the control socket, the queue's path or the
sidecar's binds, so they read just those. A file that cannot even give them
falls back to the full load, whose errors name the problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from nexo_actors.config import schema as s
from nexo_actors.config.interpolate import Interpolator
from nexo_actors.config.load import Config, load_config
from nexo_actors.config.validate import convert
from nexo_actors.errors import ConfigError, ConfigErrors

_MISSING = object()


def _node(config_dir: Path, file: str, keys: list[str], default: Any) -> Any:
    """The raw YAML value at `keys` of `file` (`default` when absent), `_MISSING` if unreadable."""
    path = config_dir / file
    if not path.is_file():
        return default
    try:
        node: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return _MISSING
    for key in keys:
        if not isinstance(node, dict):
            return _MISSING
        node = node.get(key, default if key == keys[-1] else {})
    return node


def _field(config_dir: Path, file: str, keys: list[str], default: str, cwd: Path) -> str | None:
    node = _node(config_dir, file, keys, default)
    if not isinstance(node, str):
        return None
    errors: list[ConfigError] = []
    value = Interpolator(env=dict(os.environ), cwd=cwd).string(node, file, ".".join(keys), errors)
    return None if errors else value


def _resolve(raw: str, cwd: Path) -> Path:
    p = Path(raw)
    return p if p.is_absolute() else cwd / p


def control_socket(config_dir: str | Path, cwd: Path | None = None) -> Path:
    """`<runtime.data_dir>/run/nexo.sock` of this config dir."""
    cwd = cwd or Path.cwd()
    root = _resolve(str(config_dir), cwd)
    data_dir = _field(root, "runtime.yaml", ["data_dir"], s.RuntimeFile().data_dir, cwd)
    if data_dir is None:
        return _full(config_dir).control_socket
    return _resolve(data_dir, cwd) / "run" / "nexo.sock"


def queue_db(config_dir: str | Path, cwd: Path | None = None) -> Path:
    """broker.persistence.path of this config dir (a directory means DIR/broker.db)."""
    cwd = cwd or Path.cwd()
    root = _resolve(str(config_dir), cwd)
    raw = _field(root, "broker.yaml", ["broker", "persistence", "path"], s.Persistence().path, cwd)
    if raw is None:
        return _full(config_dir).queue_db
    path = _resolve(raw, cwd)
    return path / "broker.db" if raw.endswith("/") or path.is_dir() else path


def sidecar_settings(config_dir: str | Path, cwd: Path | None = None) -> s.SidecarSettings:
    """runtime.sidecar of this config dir: from the full load, else runtime.yaml alone."""
    try:
        return _full(config_dir).runtime.sidecar
    except ConfigErrors as exc:
        root = _resolve(str(config_dir), cwd or Path.cwd())
        block = _node(root, "runtime.yaml", ["sidecar"], {})
        settings, errors = (None, [None]) if block is _MISSING else convert(
            block, s.SidecarSettings, str(root / "runtime.yaml"))
        if settings is None or errors:
            raise exc from None
        return settings


def _full(config_dir: str | Path) -> Config:
    return load_config(config_dir)
