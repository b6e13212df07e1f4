"""Extension discovery (SPEC §13): find, validate and classify every `plugin.toml`.

`discover(settings, cwd)` walks each search path in order and returns a
`Discovery`: one `DiscoveredExtension` per manifest (status ok, disabled,
invalid or skipped, with the reasons), sorted by (search path, id), plus the
errors that belong to no single manifest (id collisions, unreadable
directories). It never raises for a broken extension: every problem of
every manifest is reported in one pass, so an operator fixes them all at
once. It only reads the file system and the environment; starting
extensions is the runtime's job.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from nexo_actors.config.load import display
from nexo_actors.config.schema import ExtensionsSettings
from nexo_actors.errors import ExtensionError, IdCollisionError, ManifestError, SearchPathError
from nexo_actors.extensions.manifest import MANIFEST_NAME, Manifest, load_manifest

log = logging.getLogger(__name__)

Status = Literal["ok", "disabled", "invalid", "skipped"]
STATUSES: tuple[Status, ...] = get_args(Status)


@dataclass(frozen=True)
class DiscoveredExtension:
    """One `plugin.toml` found under a search path, and what became of it.

    `id` is None only when the file does not say (unparsable, or no string
    `plugin.id`); `manifest` is set for every status except `invalid`.
    """

    id: str | None
    root: Path
    root_index: int
    dir: Path
    manifest_path: Path
    status: Status
    reasons: list[str]
    manifest: Manifest | None


@dataclass
class Discovery:
    """Everything one discovery pass found; paths are absolute, `cwd` is for display."""

    cwd: Path
    search_paths: list[Path] = field(default_factory=list)
    extensions: list[DiscoveredExtension] = field(default_factory=list)
    errors: list[ExtensionError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[Status, int]:
        """How many extensions have each status (every status present, zero or not)."""
        counts = dict.fromkeys(STATUSES, 0)
        for ext in self.extensions:
            counts[ext.status] += 1
        return counts

    def name(self, path: Path) -> str:
        """How a path is shown to the operator: relative to the working dir when inside it."""
        return display(path, self.cwd)


@dataclass(frozen=True)
class _Candidate:
    root_index: int
    root: Path
    manifest_path: Path


def discover(settings: ExtensionsSettings, cwd: Path, *,
             env: Mapping[str, str] | None = None) -> Discovery:
    """Find and classify every extension below `settings.search_paths` (relative to `cwd`).

    `env` (default `os.environ`) is where `[requires] env` and PATH for
    `[requires] bins` are looked up.
    """
    env = os.environ if env is None else env
    roots = [_resolve(raw, cwd) for raw in settings.search_paths]
    found = Discovery(cwd=cwd, search_paths=roots)
    if not settings.enabled:
        found.notes.append("extensions are turned off (extensions.enabled: false in extensions.yaml)")
        return found

    candidates: list[_Candidate] = []
    seen_files: set[Path] = set()
    for index, root in enumerate(roots):
        for path in _walk(root, settings, found):
            # A search path nested in another (or a followed link) can reach the
            # same file twice; that is one extension, not a collision.
            real = path.resolve()
            if real not in seen_files:
                seen_files.add(real)
                candidates.append(_Candidate(index, root, path))

    loaded = [_load(c, found) for c in candidates]
    kept = _dedupe(loaded, found)
    found.extensions = sorted(
        (_classify(ext, settings, env) for ext in kept),
        key=lambda e: (e.root_index, e.id is None, e.id or "", str(e.manifest_path)),
    )
    known = {e.id for e in loaded}
    for what, ids in (("disabled", settings.disabled), ("allowlist", settings.allowlist)):
        for unknown in (i for i in ids if i not in known):
            found.notes.append(f"extensions.{what} names '{unknown}', which no search path provides")
    for ext in found.extensions:
        if ext.status == "skipped":
            log.warning("extension skipped: %s", "; ".join(ext.reasons),
                        extra={"extension": ext.id, "path": found.name(ext.dir)})
    return found


def _resolve(raw: str, cwd: Path) -> Path:
    p = Path(raw)
    return p if p.is_absolute() else cwd / p


def _walk(root: Path, settings: ExtensionsSettings, found: Discovery) -> list[Path]:
    """Every `plugin.toml` below `root`, at most `max_depth` directories down.

    A directory holding a manifest is an extension, and the walk does not
    enter it: a nested `plugin.toml` (vendored code, test fixtures) is part
    of that extension, not another one. `ignore_dirs` match directory names;
    symlinked directories are entered only with `follow_links` (the search
    path itself is always followed: the operator named it).
    """
    if not root.exists():
        log.debug("extension search path %s does not exist; skipping it", found.name(root))
        return []
    if not root.is_dir():
        found.errors.append(SearchPathError(found.name(root), "not a directory"))
        return []
    ignore = set(settings.ignore_dirs)
    manifests: list[Path] = []
    # With follow_links a link may point back up the tree; real paths break the loop.
    visited: set[Path] = set()

    def visit(directory: Path, depth: int) -> None:
        real = directory.resolve()
        if real in visited:
            return
        visited.add(real)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.errors.append(SearchPathError(found.name(directory),
                                                f"cannot read: {exc.strerror or exc}"))
            return
        for entry in entries:
            if entry.name == MANIFEST_NAME and entry.is_file():
                manifests.append(directory / MANIFEST_NAME)
                return
        if depth >= settings.max_depth:
            return
        for entry in entries:
            if entry.name in ignore or not entry.is_dir():
                continue
            if entry.is_symlink() and not settings.follow_links:
                log.debug("not following symlinked directory %s (extensions.follow_links is false)",
                          found.name(Path(entry.path)))
                continue
            visit(Path(entry.path), depth + 1)

    visit(root, 0)
    return manifests


def _load(c: _Candidate, found: Discovery) -> DiscoveredExtension:
    ext = DiscoveredExtension(id=None, root=c.root, root_index=c.root_index, dir=c.manifest_path.parent,
                              manifest_path=c.manifest_path, status="invalid", reasons=[], manifest=None)
    try:
        manifest = load_manifest(c.manifest_path, found.name(c.manifest_path))
    except ManifestError as exc:
        return replace(ext, id=exc.plugin_id, reasons=[str(p) for p in exc.problems])
    return replace(ext, id=manifest.id, status="ok", manifest=manifest)


def _dedupe(loaded: list[DiscoveredExtension], found: Discovery) -> list[DiscoveredExtension]:
    """One extension per id: the first by (search path, path) stays, the rest are reported.

    Invalid manifests take part too: their id is still taken, and the
    collision should be fixed before the manifest is.
    """
    by_id: dict[str, list[DiscoveredExtension]] = {}
    kept: list[DiscoveredExtension] = []
    for ext in sorted(loaded, key=lambda e: (e.root_index, str(e.manifest_path))):
        if ext.id is None:
            kept.append(ext)
            continue
        same = by_id.setdefault(ext.id, [])
        if not same:
            kept.append(ext)
        same.append(ext)
    for plugin_id, exts in by_id.items():
        if len(exts) > 1:
            found.errors.append(IdCollisionError(plugin_id, [found.name(e.manifest_path) for e in exts]))
    return kept


def _classify(ext: DiscoveredExtension, settings: ExtensionsSettings,
              env: Mapping[str, str]) -> DiscoveredExtension:
    """Apply the operator's lists, then the manifest's requirements, to a valid extension."""
    if ext.manifest is None:
        return ext
    m = ext.manifest
    if m.id in settings.disabled:
        return replace(ext, status="disabled", reasons=["listed in extensions.disabled"])
    if settings.allowlist and m.id not in settings.allowlist:
        return replace(ext, status="disabled", reasons=["not in allowlist (extensions.allowlist)"])
    reasons: list[str] = []
    path = env.get("PATH", os.defpath)
    missing_bins = [b for b in m.requires.bins if shutil.which(b, path=path) is None]
    if missing_bins:
        reasons.append(f"requires.bins not found on PATH: {', '.join(missing_bins)}")
    missing_env = [v for v in m.requires.env if not env.get(v)]
    if missing_env:
        reasons.append(f"requires.env not set (or empty): {', '.join(missing_env)}")
    return replace(ext, status="skipped", reasons=reasons) if reasons else ext

