"""`nexo ext list` views: the table, the JSON document, the exit code."""

from __future__ import annotations

import json
from pathlib import Path

from nexo_actors.extensions.discovery import Discovery, discover
from nexo_actors.extensions.listing import exit_code, render_table, to_json
from tests.unit.extensions.manifests import settings, write_manifest


def mixed(tmp_path: Path) -> Discovery:
    """One extension of every status."""
    root = tmp_path / "extensions"
    write_manifest(root / "good", "good", tools=("ping", "pong"))
    write_manifest(root / "off", "off", transport='type = "nats"\nsubject_prefix = "ext"')
    write_manifest(root / "needy", "needy", requires='env = ["NEEDY_TOKEN"]')
    write_manifest(root / "broken", "core")
    return discover(settings(disabled=["off"]), tmp_path, env={"PATH": ""})


def test_json_is_one_valid_document_with_right_counts(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(to_json(mixed(tmp_path))))
    assert doc["counts"] == {"ok": 1, "disabled": 1, "invalid": 1, "skipped": 1}
    assert doc["errors"] == [] and doc["notes"] == []
    by_id = {e["id"]: e for e in doc["extensions"]}
    assert [e["id"] for e in doc["extensions"]] == ["core", "good", "needy", "off"]
    good = by_id["good"]
    assert good == {
        "id": "good", "name": "good", "version": "1.0.0", "description": "", "status": "ok", "reasons": [],
        "transport": "stdio",
        "capabilities": {"tools": ["ping", "pong"], "hooks": [], "channels": [], "providers": []},
        "root": "extensions", "dir": "extensions/good", "manifest": "extensions/good/plugin.toml",
    }
    assert by_id["off"]["transport"] == "nats" and by_id["off"]["status"] == "disabled"
    assert by_id["needy"]["reasons"] == ["requires.env not set (or empty): NEEDY_TOKEN"]
    broken = by_id["core"]
    assert broken["status"] == "invalid" and broken["version"] is None and broken["capabilities"] is None
    assert "plugin.id: 'core' is reserved" in broken["reasons"][0]


def test_json_lists_collisions_with_their_paths(tmp_path: Path) -> None:
    write_manifest(tmp_path / "a" / "x", "dup")
    write_manifest(tmp_path / "b" / "x", "dup")
    doc = to_json(discover(settings("a", "b"), tmp_path, env={}))
    [err] = doc["errors"]
    assert err["kind"] == "id_collision" and err["id"] == "dup"
    assert err["paths"] == ["a/x/plugin.toml", "b/x/plugin.toml"]
    assert doc["counts"]["ok"] == 1


def test_table_has_columns_rows_reasons_and_summary(tmp_path: Path) -> None:
    lines = render_table(mixed(tmp_path)).splitlines()
    assert lines[0].split() == ["ID", "VERSION", "STATUS", "TRANSPORT", "TOOLS", "PATH"]
    assert lines[1].split()[:3] == ["core", "-", "invalid"]
    assert lines[2].startswith("    extensions/broken/plugin.toml: plugin.id: 'core' is reserved")
    assert "good 1.0.0 ok stdio ping,pong extensions/good" in " ".join(lines[3].split())
    assert lines[0].index("STATUS") == lines[3].index("ok")  # columns line up
    assert lines[4].split()[2] == "skipped"
    assert lines[5] == "    requires.env not set (or empty): NEEDY_TOKEN"
    assert lines[7] == "    listed in extensions.disabled"
    assert lines[-1] == "4 extensions: 1 ok, 1 disabled, 1 invalid, 1 skipped"


def test_table_shows_errors_and_notes(tmp_path: Path) -> None:
    write_manifest(tmp_path / "a" / "x", "dup")
    write_manifest(tmp_path / "b" / "x", "dup")
    text = render_table(discover(settings("a", "b", disabled=["ghost"]), tmp_path, env={}))
    assert ("\nerrors:\n  extension id 'dup' is declared by 2 manifests: a/x/plugin.toml, b/x/plugin.toml"
            in text)
    assert "note: extensions.disabled names 'ghost', which no search path provides" in text


def test_table_when_nothing_is_found(tmp_path: Path) -> None:
    d = discover(settings("extensions", "more"), tmp_path, env={})
    assert render_table(d) == "no extensions found (searched: extensions, more)\n"
    off = discover(settings(enabled=False), tmp_path, env={})
    assert "note: extensions are turned off" in render_table(off)


def test_exit_codes(tmp_path: Path) -> None:
    write_manifest(tmp_path / "ok" / "a", "a")
    write_manifest(tmp_path / "ok" / "b", "b", requires='bins = ["not-installed-anywhere"]')
    assert exit_code(discover(settings("ok", disabled=["a"]), tmp_path, env={})) == 0
    write_manifest(tmp_path / "bad" / "c", "Core")
    assert exit_code(discover(settings("ok", "bad"), tmp_path, env={})) == 2
    write_manifest(tmp_path / "dup" / "a", "a")
    assert exit_code(discover(settings("ok", "bad", "dup"), tmp_path, env={})) == 6
    (tmp_path / "file").write_text("")
    assert exit_code(discover(settings("file"), tmp_path, env={})) == 2
