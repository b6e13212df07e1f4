"""What `nexo ext list [--json]` prints and the exit code it returns (SPEC §13).

`render_table` is for people (aligned columns, reasons under their row,
errors and notes after the table); `to_json` is one JSON-ready document
for scripts, with the same facts; `exit_code` maps a `Discovery` to the
codes of §13 (0 ok, 2 invalid manifest/source, 6 id collision).
"""

from __future__ import annotations

from typing import Any

from nexo_actors.errors import IdCollisionError, SearchPathError
from nexo_actors.extensions.discovery import STATUSES, DiscoveredExtension, Discovery

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_COLLISION = 6

COLUMNS = ("ID", "VERSION", "STATUS", "TRANSPORT", "TOOLS", "PATH")
_NONE = "-"


def exit_code(d: Discovery) -> int:
    """6 when two manifests share an id, else 2 when anything is invalid or unreadable, else 0.

    Disabled and skipped extensions are the operator's choice or the host's
    state, not errors, so they leave the code at 0.
    """
    if any(isinstance(e, IdCollisionError) for e in d.errors):
        return EXIT_COLLISION
    if d.errors or any(ext.status == "invalid" for ext in d.extensions):
        return EXIT_INVALID
    return EXIT_OK


def _row(ext: DiscoveredExtension, d: Discovery) -> tuple[str, ...]:
    m = ext.manifest
    return (
        ext.id or _NONE,
        m.plugin.version if m else _NONE,
        ext.status,
        m.transport_type if m else _NONE,
        ",".join(m.capabilities.tools) if m and m.capabilities.tools else _NONE,
        d.name(ext.dir),
    )


def render_table(d: Discovery) -> str:
    """The listing for a terminal: one row per extension, then errors, notes and a summary."""
    lines: list[str] = []
    if d.extensions:
        rows = [COLUMNS, *(_row(ext, d) for ext in d.extensions)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]

        def fmt(row: tuple[str, ...]) -> str:
            return "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])

        lines.append(fmt(COLUMNS))
        for ext, row in zip(d.extensions, rows[1:], strict=True):
            lines.append(fmt(row))
            lines.extend(f"    {reason}" for reason in ext.reasons)
    else:
        searched = ", ".join(d.name(p) for p in d.search_paths) or "(no search paths)"
        lines.append(f"no extensions found (searched: {searched})")
    if d.errors:
        lines.append("")
        lines.append("errors:")
        lines.extend(f"  {e}" for e in d.errors)
    if d.notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in d.notes)
    if d.extensions:
        counts = d.counts()
        n = len(d.extensions)
        lines.append("")
        lines.append(f"{n} extension{'s' if n != 1 else ''}: "
                     + ", ".join(f"{counts[s]} {s}" for s in STATUSES))
    return "\n".join(lines) + "\n"


def _extension_json(ext: DiscoveredExtension, d: Discovery) -> dict[str, Any]:
    m = ext.manifest
    return {
        "id": ext.id,
        "name": (m.plugin.name or m.id) if m else None,
        "version": m.plugin.version if m else None,
        "description": m.plugin.description if m else None,
        "status": ext.status,
        "reasons": list(ext.reasons),
        "transport": m.transport_type if m else None,
        "capabilities": {
            "tools": list(m.capabilities.tools), "hooks": list(m.capabilities.hooks),
            "channels": list(m.capabilities.channels), "providers": list(m.capabilities.providers),
        } if m else None,
        "root": d.name(ext.root),
        "dir": d.name(ext.dir),
        "manifest": d.name(ext.manifest_path),
    }


def to_json(d: Discovery) -> dict[str, Any]:
    """One JSON-ready document: extensions, errors, notes and counts per status."""
    errors: list[dict[str, Any]] = []
    for e in d.errors:
        if isinstance(e, IdCollisionError):
            errors.append({"kind": "id_collision", "id": e.plugin_id, "paths": list(e.paths),
                           "message": str(e)})
        elif isinstance(e, SearchPathError):
            errors.append({"kind": "search_path", "path": e.path, "message": str(e)})
        else:
            errors.append({"kind": "error", "message": str(e)})
    return {
        "extensions": [_extension_json(ext, d) for ext in d.extensions],
        "errors": errors,
        "notes": list(d.notes),
        "counts": dict(d.counts()),
    }
