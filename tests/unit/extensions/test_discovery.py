"""Discovery over real directory trees: pruning, ids, statuses, limits, links."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from nexo_actors.errors import IdCollisionError, SearchPathError
from nexo_actors.extensions.discovery import Discovery, discover
from tests.unit.extensions.manifests import settings, write_manifest

NO_ENV: dict[str, str] = {"PATH": ""}


def run(cwd: Path, *paths: str, env: dict[str, str] | None = None, **overrides: object) -> Discovery:
    return discover(settings(*paths, **overrides), cwd, env=NO_ENV if env is None else env)


def ids(d: Discovery) -> list[str | None]:
    return [e.id for e in d.extensions]


def test_valid_extension_is_found_ok(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "extensions" / "demo")
    d = run(tmp_path)
    assert len(d.extensions) == 1
    ext = d.extensions[0]
    assert (ext.id, ext.status, ext.reasons) == ("demo", "ok", [])
    assert ext.manifest_path == manifest and ext.dir == manifest.parent
    assert ext.root == tmp_path / "extensions" and ext.root_index == 0
    assert ext.manifest is not None and ext.manifest.capabilities.tools == ["ping"]
    assert d.errors == [] and d.notes == []


def test_nested_plugin_toml_is_part_of_its_extension(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "outer", "outer")
    write_manifest(tmp_path / "extensions" / "outer" / "vendor" / "inner", "inner")
    write_manifest(tmp_path / "extensions" / "outer" / "tests" / "fixtures", "outer")  # no collision
    d = run(tmp_path)
    assert ids(d) == ["outer"]
    assert d.errors == []


def test_same_id_under_two_roots_is_a_collision_naming_both(tmp_path: Path) -> None:
    write_manifest(tmp_path / "a" / "x", "dup")
    write_manifest(tmp_path / "b" / "y", "dup", version="2.0.0")
    d = run(tmp_path, "a", "b")
    assert len(d.extensions) == 1
    kept = d.extensions[0]
    assert kept.root_index == 0 and kept.manifest is not None and kept.manifest.plugin.version == "1.0.0"
    [err] = d.errors
    assert isinstance(err, IdCollisionError)
    assert err.plugin_id == "dup" and err.paths == ["a/x/plugin.toml", "b/y/plugin.toml"]
    assert "a/x/plugin.toml" in str(err) and "b/y/plugin.toml" in str(err)


def test_same_id_twice_in_one_root_is_a_collision(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "one", "dup")
    write_manifest(tmp_path / "extensions" / "two", "dup")
    d = run(tmp_path)
    [err] = d.errors
    assert isinstance(err, IdCollisionError)
    assert err.paths == ["extensions/one/plugin.toml", "extensions/two/plugin.toml"]


def test_overlapping_search_paths_reach_one_manifest_once(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "demo")
    d = run(tmp_path, "extensions", "extensions/demo")
    assert ids(d) == ["demo"]
    assert d.errors == []


def test_results_sorted_by_root_then_id(tmp_path: Path) -> None:
    for root, name in [("b", "zeta"), ("b", "alpha"), ("a", "mid"), ("a", "beta")]:
        write_manifest(tmp_path / root / name, name)
    d = run(tmp_path, "b", "a")
    assert ids(d) == ["alpha", "zeta", "beta", "mid"]


def test_disabled_extension(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "on", "on")
    write_manifest(tmp_path / "extensions" / "off", "off")
    d = run(tmp_path, disabled=["off", "ghost"])
    status = {e.id: (e.status, e.reasons) for e in d.extensions}
    assert status == {"on": ("ok", []), "off": ("disabled", ["listed in extensions.disabled"])}
    assert d.notes == ["extensions.disabled names 'ghost', which no search path provides"]


def test_allowlist_disables_everything_not_listed(tmp_path: Path) -> None:
    for name in ("keep", "drop", "also"):
        write_manifest(tmp_path / "extensions" / name, name)
    d = run(tmp_path, allowlist=["keep", "also"])
    status = {e.id: e.status for e in d.extensions}
    assert status == {"also": "ok", "drop": "disabled", "keep": "ok"}
    [drop] = [e for e in d.extensions if e.id == "drop"]
    assert drop.reasons and drop.reasons[0].startswith("not in allowlist")


def test_missing_required_bin_skips_and_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "present-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    write_manifest(tmp_path / "extensions" / "needy", "needy",
                   requires='bins = ["present-tool", "absent-tool"]')
    write_manifest(tmp_path / "extensions" / "fine", "fine", requires='bins = ["present-tool"]')
    with caplog.at_level(logging.WARNING, logger="nexo_actors.extensions.discovery"):
        d = run(tmp_path, env={"PATH": str(bindir)})
    status = {e.id: (e.status, e.reasons) for e in d.extensions}
    assert status["fine"] == ("ok", [])
    assert status["needy"] == ("skipped", ["requires.bins not found on PATH: absent-tool"])
    assert "absent-tool" in caplog.text


def test_unset_required_env_skips_and_names_it(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "keyed", "keyed", requires='env = ["API_KEY", "REGION"]')
    d = run(tmp_path, env={"PATH": "", "REGION": "eu", "API_KEY": ""})
    [ext] = d.extensions
    assert (ext.status, ext.reasons) == ("skipped", ["requires.env not set (or empty): API_KEY"])
    d = run(tmp_path, env={"PATH": "", "REGION": "eu", "API_KEY": "k"})
    assert d.extensions[0].status == "ok"


def test_disabled_wins_over_unmet_requirements(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "x", "x", requires='bins = ["nowhere-bin"]')
    assert run(tmp_path, disabled=["x"]).extensions[0].status == "disabled"


def test_every_broken_manifest_is_reported_in_one_pass(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    write_manifest(root / "first", "Bad_ID", version="1.0", tools=(), transport='type = "stdio"')
    write_manifest(root / "second", "core", tools=("Greet", "ping", "ping"))
    (root / "third").mkdir()
    (root / "third" / "plugin.toml").write_text("[plugin\n")
    write_manifest(root / "good", "good")
    d = run(tmp_path)
    by_dir = {e.dir.name: e for e in d.extensions}
    assert by_dir["good"].status == "ok"
    assert {n for n, e in by_dir.items() if e.status == "invalid"} == {"first", "second", "third"}
    first = "\n".join(by_dir["first"].reasons)
    for want in ("plugin.id: 'Bad_ID' is not a valid id", "plugin.version: '1.0' is not a semantic version",
                 "capabilities: declares nothing", "transport: missing required field 'command'"):
        assert f"extensions/first/plugin.toml: {want}" in first
    second = "\n".join(by_dir["second"].reasons)
    for want in ("plugin.id: 'core' is reserved", "capabilities.tools[0]: 'Greet' is not a valid name",
                 "capabilities.tools[2]: 'ping' is listed more than once"):
        assert f"extensions/second/plugin.toml: {want}" in second
    assert by_dir["third"].id is None and "TOML syntax error" in by_dir["third"].reasons[0]
    assert by_dir["first"].id == "Bad_ID" and by_dir["first"].manifest is None


@pytest.mark.parametrize(("max_depth", "found"), [(0, ["top"]), (1, ["one", "top"]),
                                                  (3, ["one", "three", "top"])])
def test_max_depth_is_respected(tmp_path: Path, max_depth: int, found: list[str]) -> None:
    write_manifest(tmp_path / "root" / "a", "one")
    write_manifest(tmp_path / "root" / "b" / "c" / "d", "three")
    write_manifest(tmp_path / "root" / "b" / "c" / "e" / "f", "four")  # depth 4: never found
    # depth 0 is the search path itself: point one at a directory that is an extension.
    write_manifest(tmp_path / "solo", "top")
    d = run(tmp_path, "solo", "root", max_depth=max_depth)
    assert sorted(i for i in ids(d) if i) == found


def test_ignore_dirs_are_not_entered(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "node_modules" / "pkg", "pkg")
    write_manifest(tmp_path / "extensions" / "custom_skip" / "x", "x")
    write_manifest(tmp_path / "extensions" / "real", "real")
    d = run(tmp_path, ignore_dirs=["node_modules", "custom_skip"])
    assert ids(d) == ["real"]
    assert ids(run(tmp_path, ignore_dirs=[])) == ["pkg", "real", "x"]


def test_symlinked_dir_followed_only_with_follow_links(tmp_path: Path) -> None:
    write_manifest(tmp_path / "elsewhere" / "linked", "linked")
    (tmp_path / "extensions").mkdir()
    (tmp_path / "extensions" / "linked").symlink_to(tmp_path / "elsewhere" / "linked")
    assert ids(run(tmp_path)) == []
    d = run(tmp_path, follow_links=True)
    assert ids(d) == ["linked"]
    assert d.extensions[0].dir == tmp_path / "extensions" / "linked"


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    loop = tmp_path / "extensions" / "a"
    loop.mkdir(parents=True)
    (loop / "back").symlink_to(tmp_path / "extensions")
    write_manifest(tmp_path / "extensions" / "a" / "b" / "real", "real")
    d = run(tmp_path, follow_links=True, max_depth=50)
    assert ids(d) == ["real"] and d.errors == []


def test_missing_search_path_is_not_an_error(tmp_path: Path) -> None:
    d = run(tmp_path, "does-not-exist")
    assert d.extensions == [] and d.errors == [] and d.notes == []


def test_search_path_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "extensions").write_text("")
    [err] = run(tmp_path).errors
    assert isinstance(err, SearchPathError)
    assert str(err).startswith("extensions: not a directory")


def _errors_as(uid: int, cwd: Path, queue: multiprocessing.Queue[list[str]]) -> None:
    os.setgid(uid)
    os.setuid(uid)
    queue.put([f"{type(e).__name__}: {e}" for e in run(cwd).errors])


def test_unreadable_search_path_is_reported(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # Root reads any directory: look as an unprivileged uid, in a forked
        # child that drops its privileges, from a directory it may traverse.
        base = Path(tempfile.mkdtemp(prefix="nexo-ext-", dir="/tmp"))
        base.chmod(0o755)
        try:
            (base / "extensions").mkdir(mode=0)
            ctx = multiprocessing.get_context("fork")
            queue: multiprocessing.Queue[list[str]] = ctx.Queue()
            child = ctx.Process(target=_errors_as, args=(65534, base, queue))
            child.start()
            errors = queue.get(timeout=20)
            child.join(20)
        finally:
            (base / "extensions").chmod(0o755)
            shutil.rmtree(base)
        assert len(errors) == 1 and errors[0].startswith("SearchPathError")
        assert "cannot read" in errors[0]
        return
    root = tmp_path / "extensions"
    root.mkdir()
    root.chmod(0)
    try:
        [err] = run(tmp_path).errors
    finally:
        root.chmod(0o755)
    assert isinstance(err, SearchPathError) and "cannot read" in str(err)


def test_turned_off_gives_an_empty_discovery_with_a_note(tmp_path: Path) -> None:
    write_manifest(tmp_path / "extensions" / "demo")
    d = run(tmp_path, enabled=False)
    assert d.extensions == [] and d.errors == []
    assert d.notes == ["extensions are turned off (extensions.enabled: false in extensions.yaml)"]


def test_absolute_search_path_and_display_outside_cwd(tmp_path: Path) -> None:
    write_manifest(tmp_path / "outside" / "demo")
    cwd = tmp_path / "work"
    cwd.mkdir()
    d = run(cwd, str(tmp_path / "outside"))
    assert ids(d) == ["demo"]
    assert d.name(d.extensions[0].dir) == str(tmp_path / "outside" / "demo")
