"""Extensions (SPEC §13): out-of-process programs that add tools, hooks, channels, providers.

An extension is a directory with a `plugin.toml` under one of
`extensions.search_paths`. This package finds and validates them
(`discover`), and renders what `nexo ext list` prints (`render_table`,
`to_json`, `exit_code`). Each module stands alone:

    manifest   the `plugin.toml` schema and its rules; `ManifestError`
    discovery  walking the search paths; statuses ok|disabled|invalid|skipped
    listing    table / JSON views and the CLI exit code
"""

from __future__ import annotations

from nexo_actors.errors import ExtensionError, IdCollisionError, ManifestError, SearchPathError
from nexo_actors.extensions.discovery import STATUSES, DiscoveredExtension, Discovery, Status, discover
from nexo_actors.extensions.listing import exit_code, render_table, to_json
from nexo_actors.extensions.manifest import (
    MANIFEST_NAME,
    Manifest,
    id_problem,
    load_manifest,
    parse_manifest,
)

__all__ = [
    "MANIFEST_NAME",
    "STATUSES",
    "DiscoveredExtension",
    "Discovery",
    "ExtensionError",
    "IdCollisionError",
    "Manifest",
    "ManifestError",
    "SearchPathError",
    "Status",
    "discover",
    "exit_code",
    "id_problem",
    "load_manifest",
    "parse_manifest",
    "render_table",
    "to_json",
]
