"""Write a complete config directory for a test, with real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_AGENT: dict[str, Any] = {
    "id": "kate",
    "description": "front desk",
    "model": {"provider": "echo", "model": "echo-1"},
    "channels": ["cli"],
}


def write_conf(
    root: Path,
    data_dir: Path,
    *,
    agents: list[dict[str, Any]] | None = None,
    broker: dict[str, Any] | None = None,
    llm: dict[str, Any] | None = None,
    memory: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """A config dir at `root` whose data lives in `data_dir`; sidecar off unless asked."""
    root.mkdir(parents=True, exist_ok=True)
    broker_doc = {"type": "local", "persistence": {"path": str(data_dir / "queue" / "broker.db")}}
    broker_doc.update(broker or {})
    runtime_doc: dict[str, Any] = {"data_dir": str(data_dir), "sidecar": {"enabled": False}}
    for key, value in (runtime or {}).items():
        if isinstance(value, dict) and isinstance(runtime_doc.get(key), dict):
            runtime_doc[key] = {**runtime_doc[key], **value}
        else:
            runtime_doc[key] = value
    files = {
        "agents.yaml": {"agents": agents if agents is not None else [DEFAULT_AGENT]},
        "broker.yaml": {"broker": broker_doc},
        "llm.yaml": llm or {"providers": {"echo": {"prefix": "echo: "}}},
        "memory.yaml": memory or {"short_term": {"max_history_turns": 50}},
        "runtime.yaml": runtime_doc,
    }
    for name, doc in files.items():
        (root / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    for name, text in (extra_files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
