"""Helpers that write real extension directories for the discovery tests."""

from __future__ import annotations

from pathlib import Path

from nexo_actors.config.schema import ExtensionsSettings


def write_manifest(directory: Path, plugin_id: str = "demo", *, version: str = "1.0.0",
                   tools: tuple[str, ...] = ("ping",), transport: str = 'type = "stdio"\ncommand = "true"',
                   requires: str = "", extra: str = "") -> Path:
    """A `plugin.toml` in `directory` (created); returns the manifest's path."""
    directory.mkdir(parents=True, exist_ok=True)
    tool_list = ", ".join(f'"{t}"' for t in tools)
    text = (
        f'[plugin]\nid = "{plugin_id}"\nversion = "{version}"\n\n'
        f"[capabilities]\ntools = [{tool_list}]\n\n"
        f"[transport]\n{transport}\n"
    )
    if requires:
        text += f"\n[requires]\n{requires}\n"
    path = directory / "plugin.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def settings(*search_paths: str, **overrides: object) -> ExtensionsSettings:
    """Extension settings over `search_paths` (default ./extensions) with `overrides`."""
    paths = list(search_paths) or ["./extensions"]
    return ExtensionsSettings(search_paths=paths, **overrides)  # type: ignore[arg-type]
