"""Loading a config directory: schema errors with file and `$.` path, every
error of every file reported together, semantic cross-checks (SPEC §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nexo_actors.config import load_config
from nexo_actors.config.schema import AgentsFile, Limits
from nexo_actors.config.validate import convert
from nexo_actors.errors import ConfigErrors
from tests.support.confdir import write_conf


def agent(agent_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": agent_id, "model": {"provider": "echo", "model": "echo-1"}, **extra}


def load_errors(conf: Path, cwd: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(conf, env={}, cwd=cwd)
    return [str(e) for e in info.value.errors]


def test_default_test_config_loads(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data")
    config = load_config(conf, env={}, cwd=tmp_path)
    assert [a.id for a in config.agents] == ["kate"]
    assert config.broker.type == "local"
    assert config.data_dir == tmp_path / "data"
    assert config.lock_file == tmp_path / "data" / "nexo.lock"


def test_repository_default_conf_is_valid() -> None:
    repo = Path(__file__).resolve().parents[3]
    config = load_config(repo / "conf", env={}, cwd=repo)
    assert config.agents


def test_unknown_field_names_file_path_and_suggests_the_field(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      agents=[{"id": "kate", "modl": {"provider": "echo", "model": "m"}}])
    assert load_errors(conf, tmp_path) == [
        "conf/agents.yaml: $.agents[0]: unknown field 'modl' (did you mean 'model'?)",
        "conf/agents.yaml: $.agents[0]: missing required field 'model'",
    ]


def test_missing_required_field(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      agents=[{"id": "kate", "model": {"provider": "echo"}}])
    assert load_errors(conf, tmp_path) == [
        "conf/agents.yaml: $.agents[0].model: missing required field 'model'"]


@pytest.mark.parametrize(("tree", "path", "detail"), [
    ({"max_pending": "lots"}, "$.max_pending", "expected `int`, got `str`"),
    ({"max_pending": True}, "$.max_pending", "expected `int`, got `bool`"),
    ({"max_pending": [1]}, "$.max_pending", "expected `int`, got `array`"),
])
def test_wrong_type_is_reported_with_its_path(tree: dict[str, Any], path: str, detail: str) -> None:
    value, errors = convert(tree, Limits, "conf/broker.yaml")
    assert value is None
    assert [str(e) for e in errors] == [f"conf/broker.yaml: {path}: {detail}"]


def test_wrong_container_types(tmp_path: Path) -> None:
    value, errors = convert({"agents": [{"id": "a", "model": "echo", "channels": "cli"}]},
                            AgentsFile, "conf/agents.yaml")
    assert value is None
    assert [str(e) for e in errors] == [
        "conf/agents.yaml: $.agents[0].model: expected an object, got str",
        "conf/agents.yaml: $.agents[0].channels: expected an array, got str",
    ]


def test_literal_field_lists_the_allowed_values(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", broker={"type": "kafka"})
    assert load_errors(conf, tmp_path) == [
        "conf/broker.yaml: $.broker.type: invalid value 'kafka'; expected 'local' or 'nats'"]


def test_every_error_of_every_file_is_reported_together(tmp_path: Path) -> None:
    conf = write_conf(
        tmp_path / "conf", tmp_path / "data",
        agents=[agent("kate", descripton="typo"), {"id": "bob"},
                agent("ann", model={"provider": "nope", "model": "x"})],
        broker={"limits": {"max_pending": "lots"}},
        memory={"short_term": {"session_ttl": "5 fortnights"}},
        extra_files={"agents.d/10-more.yaml": "agents:\n  - {id: kate, model: {provider: echo, "
                                               "model: m}}\n"},
    )
    errors = load_errors(conf, tmp_path)
    assert sorted(errors) == sorted([
        "conf/agents.yaml: $.agents[0]: unknown field 'descripton' (did you mean 'description'?)",
        "conf/agents.yaml: $.agents[1]: missing required field 'model'",
        "conf/agents.yaml: $.agents[2].model.provider: unknown provider 'nope'; conf/llm.yaml "
        "defines: echo",
        "conf/agents.d/10-more.yaml: $.agents[0].id: duplicate agent id 'kate' (first defined in "
        "conf/agents.yaml)",
        "conf/broker.yaml: $.broker.limits.max_pending: expected `int`, got `str`",
        "conf/memory.yaml: $.short_term.session_ttl: invalid duration '5 fortnights': use a number "
        "with a unit (ms, s, m, h, d), e.g. 30s, 5m, 24h",
    ])


def test_unknown_provider_is_reported_even_when_llm_yaml_has_another_error(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      agents=[agent("kate", model={"provider": "nope", "model": "x"})],
                      llm={"providers": {"echo": {}}, "retyr": {}})
    assert sorted(load_errors(conf, tmp_path)) == [
        "conf/agents.yaml: $.agents[0].model.provider: unknown provider 'nope'; conf/llm.yaml "
        "defines: echo",
        "conf/llm.yaml: $: unknown field 'retyr' (did you mean 'retry'?)",
    ]


def test_duplicate_agent_id_across_agents_d_files(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", extra_files={
        "agents.d/20-b.yaml": "agents:\n  - {id: ops, model: {provider: echo, model: m}}\n",
        "agents.d/10-a.yaml": "agents:\n  - {id: ops, model: {provider: echo, model: m}}\n",
        "agents.d/notes.txt": "not yaml: [",
    })
    assert load_errors(conf, tmp_path) == [
        "conf/agents.d/20-b.yaml: $.agents[0].id: duplicate agent id 'ops' (first defined in "
        "conf/agents.d/10-a.yaml)"]


def test_agents_d_files_merge_in_file_name_order(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", extra_files={
        "agents.d/20-b.yaml": "agents:\n  - {id: zed, model: {provider: echo, model: m}}\n",
        "agents.d/10-a.yml": "agents:\n  - {id: ops, model: {provider: echo, model: m}}\n",
    })
    assert [a.id for a in load_config(conf, env={}, cwd=tmp_path).agents] == ["kate", "ops", "zed"]


@pytest.mark.parametrize("bad_id", ["Kate", "1kate", "ka te", "k" * 65, ""])
def test_agent_id_must_match_the_pattern(tmp_path: Path, bad_id: str) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", agents=[agent(bad_id)])
    errors = load_errors(conf, tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith(f"conf/agents.yaml: $.agents[0].id: invalid agent id {bad_id!r}")


@pytest.mark.parametrize("channel", ["cli.*", "a..b", "te st", ">"])
def test_channel_must_give_valid_subjects(tmp_path: Path, channel: str) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", agents=[agent("kate", channels=[channel])])
    errors = load_errors(conf, tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith("conf/agents.yaml: $.agents[0].channels[0]: ")


def test_unimplemented_provider_flavor_is_refused(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      agents=[agent("kate", model={"provider": "minimax", "model": "m"})],
                      llm={"providers": {"echo": {}, "minimax": {}}})
    errors = load_errors(conf, tmp_path)
    assert errors == ["conf/agents.yaml: $.agents[0].model.provider: provider 'minimax' uses "
                      "api_flavor 'anthropic_messages', which this version cannot call yet; use a "
                      "provider with api_flavor 'echo'"]


def test_missing_required_file_and_yaml_syntax_error(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data")
    (conf / "memory.yaml").unlink()
    (conf / "broker.yaml").write_text("broker: {type: local\n")
    errors = load_errors(conf, tmp_path)
    assert len(errors) == 2
    assert errors[0].startswith("conf/broker.yaml: line ")
    assert "YAML syntax error" in errors[0]
    assert errors[1].startswith("conf/memory.yaml: file not found (required)")


def test_missing_config_directory(tmp_path: Path) -> None:
    assert load_errors(tmp_path / "nowhere", tmp_path) == [
        "nowhere: config directory not found; pass --config DIR (default ./conf)"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data")
    (conf / "llm.yaml").write_text("- echo\n")
    assert load_errors(conf, tmp_path) == [
        "conf/llm.yaml: $: expected a mapping at the top level, got list"]


def test_runtime_semantic_checks(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", runtime={
        "agents": {"processes": 0}, "sidecar": {"workers": 0, "health_bind": "localhost"}})
    assert sorted(load_errors(conf, tmp_path)) == [
        "conf/runtime.yaml: $.agents.processes: must be 'auto' or at least 1",
        "conf/runtime.yaml: $.sidecar.health_bind: invalid address 'localhost'; expected "
        "host:port, e.g. 0.0.0.0:8080",
        "conf/runtime.yaml: $.sidecar.workers: must be at least 1",
    ]


def test_processes_accepts_auto_or_int_only(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", runtime={"agents": {"processes": "many"}})
    assert load_errors(conf, tmp_path) == [
        "conf/runtime.yaml: $.agents.processes: invalid value 'many'; expected an int or 'auto'"]


def test_relative_paths_resolve_against_cwd(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      broker={"persistence": {"path": "state/q/"}}, runtime={"data_dir": "state"})
    config = load_config("conf", env={}, cwd=tmp_path)
    assert config.source == conf
    assert config.data_dir == tmp_path / "state"
    assert config.queue_db == tmp_path / "state" / "q" / "broker.db"
