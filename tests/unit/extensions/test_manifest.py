"""The `plugin.toml` schema and the validation rules of SPEC §13."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexo_actors.errors import ManifestError
from nexo_actors.extensions.manifest import (
    HttpTransport,
    NatsTransport,
    StdioTransport,
    id_problem,
    load_manifest,
    parse_manifest,
)

FILE = "extensions/foo/plugin.toml"
VALID = """
[plugin]
id = "foo"
version = "1.2.3"

[capabilities]
tools = ["lookup"]

[transport]
type = "stdio"
command = "python3"
args = ["main.py"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, FILE)
    return [str(p) for p in info.value.problems]


def test_valid_manifest_parses_with_defaults() -> None:
    m = parse_manifest(VALID, FILE)
    assert m.id == "foo"
    assert m.transport == StdioTransport(command="python3", args=["main.py"])
    assert m.transport_type == "stdio"
    assert m.capabilities.tools == ["lookup"]
    assert m.requires.bins == [] and m.requires.env == []
    assert m.context.passthrough is False
    assert m.plugin.priority == 0 and m.plugin.min_agent_version is None


@pytest.mark.parametrize(("table", "expected"), [
    ('type = "nats"\nsubject_prefix = "ext"', NatsTransport(subject_prefix="ext")),
    ('type = "http"\nurl = "https://ext.local:8443/rpc"', HttpTransport(url="https://ext.local:8443/rpc")),
])
def test_every_transport_type_parses(table: str, expected: object) -> None:
    text = VALID.split("[transport]", maxsplit=1)[0] + "[transport]\n" + table + "\n"
    assert parse_manifest(text, FILE).transport == expected


@pytest.mark.parametrize(("table", "message"), [
    ('type = "stdio"', "transport: missing required field 'command'"),
    ('type = "stdio"\ncommand = " "', "transport.command: must not be empty"),
    ('type = "nats"', "transport: missing required field 'subject_prefix'"),
    ('type = "nats"\nsubject_prefix = "a..b"', "transport.subject_prefix: subject 'a..b' has an empty token"),
    ('type = "http"', "transport: missing required field 'url'"),
    ('type = "http"\nurl = "ftp://x"', "transport.url: 'ftp://x' is not an http:// or https:// URL"),
    ('type = "grpc"', "transport.type: invalid value 'grpc'"),
    ('command = "x"', "transport: missing required field 'type'"),
    ('type = "stdio"\ncommand = "x"\nurl = "http://x"', "transport: unknown field 'url'"),
])
def test_transport_fields_are_required_per_type(table: str, message: str) -> None:
    text = VALID.split("[transport]", maxsplit=1)[0] + "[transport]\n" + table + "\n"
    assert any(p.startswith(f"{FILE}: {message}") for p in problems(text)), problems(text)


def test_every_problem_of_one_manifest_is_reported_together() -> None:
    text = """
[plugin]
id = "Core"
version = "1.0"
priority = "high"
description = "%s"

[capabilities]
tools = ["Greet", "ok", "ok"]

[transport]
type = "stdio"

[requires]
env = ["NOT-A-NAME"]

[extras]
""" % ("x" * 513)
    found = problems(text)
    expected = [
        f"{FILE}: unknown table [extras]",
        f"{FILE}: plugin.priority: expected `int`, got `str`",
        f"{FILE}: plugin.id: 'Core' is not a valid id (",
        f"{FILE}: plugin.version: '1.0' is not a semantic version",
        f"{FILE}: plugin.description: 513 characters long; at most 512",
        f"{FILE}: capabilities.tools[0]: 'Greet' is not a valid name",
        f"{FILE}: capabilities.tools[2]: 'ok' is listed more than once",
        f"{FILE}: transport: missing required field 'command'",
        f"{FILE}: requires.env[0]: 'NOT-A-NAME' is not a variable name",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in found), (want, found)
    assert len(found) == len(expected)


def test_manifest_error_keeps_the_declared_id_and_names_the_file() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(VALID.replace('"foo"', '"core"'), FILE)
    err = info.value
    assert err.plugin_id == "core" and err.file == FILE
    assert str(err).startswith(f"{FILE} is invalid (1 problem):")
    assert "plugin.id: 'core' is reserved" in str(err)


def test_empty_capabilities_are_refused() -> None:
    text = VALID.replace('tools = ["lookup"]', "tools = []\nhooks = []")
    assert problems(text) == [
        f"{FILE}: capabilities: declares nothing; list at least one of tools, hooks, channels, providers"
    ]
    without_table = VALID.replace('[capabilities]\ntools = ["lookup"]', "")
    assert any("capabilities: declares nothing" in p for p in problems(without_table))


def test_any_capability_kind_satisfies_the_non_empty_rule() -> None:
    text = VALID.replace('tools = ["lookup"]', 'hooks = ["before_message"]')
    assert parse_manifest(text, FILE).capabilities.hooks == ["before_message"]


def test_missing_plugin_and_transport_tables() -> None:
    found = problems('[capabilities]\ntools = ["x"]\n')
    assert f"{FILE}: missing table [plugin] (id and version are required)" in found
    assert any(p.startswith(f"{FILE}: missing table [transport]") for p in found)


def test_unknown_key_gets_a_hint() -> None:
    found = problems(VALID.replace('version = "1.2.3"', 'version = "1.2.3"\ndescripton = "x"'))
    assert found == [f"{FILE}: plugin: unknown field 'descripton' (did you mean 'description'?)"]


def test_toml_syntax_error_is_one_problem_with_its_line() -> None:
    found = problems("[plugin\nid = 1\n")
    assert len(found) == 1
    assert found[0].startswith(f"{FILE}: TOML syntax error:") and "line 1" in found[0]


@pytest.mark.parametrize("value", ["foo", "a", "my-ext_2", "x" * 64])
def test_valid_ids(value: str) -> None:
    assert id_problem(value) is None


@pytest.mark.parametrize(("value", "why"), [
    ("Foo", "is not a valid id"), ("1ext", "is not a valid id"), ("", "is not a valid id"),
    ("a.b", "is not a valid id"), ("é", "is not a valid id"), ("x" * 65, "65 characters long"),
    *((r, "is reserved") for r in
      ("agent", "browser", "core", "email", "heartbeat", "memory", "telegram", "whatsapp")),
])
def test_invalid_and_reserved_ids(value: str, why: str) -> None:
    assert why in (id_problem(value) or "")


@pytest.mark.parametrize("version", ["0.0.0", "1.2.3", "10.20.30", "1.0.0-alpha.1", "1.0.0+build.5",
                                     "1.0.0-rc.1+sha.abc"])
def test_semver_accepted(version: str) -> None:
    assert parse_manifest(VALID.replace("1.2.3", version), FILE).plugin.version == version


@pytest.mark.parametrize("version", ["1", "1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0.0", "1.0.0\n",
                                     "\uff11.0.0"])  # a fullwidth digit one is not an ASCII digit
def test_semver_rejected(version: str) -> None:
    text = VALID.replace('"1.2.3"', repr(version).replace("'", '"'))
    assert any("plugin.version:" in p for p in problems(text))


def test_load_manifest_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "plugin.toml", "x/plugin.toml")
    assert [str(p) for p in info.value.problems] == ["x/plugin.toml: cannot read: No such file or directory"]
