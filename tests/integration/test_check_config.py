"""`nexo check-config [--print]` as a real process (SPEC §2, §8): every error
in one run with file and `$.` path, the missing-secret message, and dumps
that show secrets only as `***`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from tests.support.confdir import write_conf
from tests.support.runtime import nexo

ECHO = {"provider": "echo", "model": "echo-1"}


def test_valid_config_exits_0(tmp_path: Path) -> None:
    write_conf(tmp_path / "conf", tmp_path / "data")
    result = nexo("--config", "conf", "check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "conf: configuration is valid (1 agents, broker local)"


def test_all_errors_reported_together_with_file_and_path(tmp_path: Path) -> None:
    write_conf(
        tmp_path / "conf", tmp_path / "data",
        agents=[
            {"id": "kate", "model": ECHO, "descripton": "typo"},            # unknown field
            {"id": "bob", "channels": ["cli"]},                               # missing field
            {"id": "ann", "model": {"provider": "nope", "model": "x"}},       # unknown provider
        ],
        broker={"limits": {"max_pending": "lots"}},                           # wrong type
        memory={"short_term": {"session_ttl": "5 fortnights"}},               # bad duration
        extra_files={"agents.d/10-extra.yaml": yaml.safe_dump(               # duplicate id
            {"agents": [{"id": "ops", "model": ECHO}, {"id": "kate", "model": ECHO}]})},
    )
    result = nexo("--config", "conf", "check-config", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "configuration is invalid (6 errors):"
    assert sorted(line.strip() for line in lines[1:]) == sorted([
        "conf/agents.yaml: $.agents[0]: unknown field 'descripton' (did you mean 'description'?)",
        "conf/agents.yaml: $.agents[1]: missing required field 'model'",
        "conf/broker.yaml: $.broker.limits.max_pending: expected `int`, got `str`",
        "conf/memory.yaml: $.short_term.session_ttl: invalid duration '5 fortnights': use a number "
        "with a unit (ms, s, m, h, d), e.g. 30s, 5m, 24h",
        "conf/agents.yaml: $.agents[2].model.provider: unknown provider 'nope'; conf/llm.yaml "
        "defines: echo",
        "conf/agents.d/10-extra.yaml: $.agents[1].id: duplicate agent id 'kate' (first defined in "
        "conf/agents.yaml)",
    ])


def test_missing_docker_secret_names_the_secret_and_the_file_to_create(tmp_path: Path) -> None:
    name = f"nexo_test_{uuid.uuid4().hex[:12]}"
    assert not Path("/run/secrets", name).exists()
    write_conf(tmp_path / "conf" / "docker", tmp_path / "data", llm={"providers": {
        "echo": {"prefix": "echo: "},
        "minimax": {"api_key": f"${{file:/run/secrets/{name}}}"}}})
    result = nexo("--config", "conf/docker", "check-config", cwd=tmp_path)
    assert result.returncode == 1
    assert (f"conf/docker/llm.yaml: providers.minimax.api_key: ${{file:/run/secrets/{name}}}: "
            f"no such file — create ./secrets/{name}.txt before docker compose up"
            ) in result.stderr.splitlines()[1]
    assert "Traceback" not in result.stderr


def test_print_masks_secrets_and_never_shows_their_values(tmp_path: Path) -> None:
    file_key = "sk-file-" + uuid.uuid4().hex
    file_group = "grp-file-" + uuid.uuid4().hex
    env_key = "sk-env-" + uuid.uuid4().hex
    inline_key = "sk-inline-" + uuid.uuid4().hex
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key.txt").write_text(file_key + "\n")
    (tmp_path / "secrets" / "group.txt").write_text(file_group)
    write_conf(tmp_path / "conf", tmp_path / "data", llm={"providers": {
        "echo": {"prefix": "echo: ", "api_key": "${file:secrets/key.txt}",
                 "group_id": "${file:./secrets/group.txt}"},
        "env": {"api_flavor": "echo", "api_key": "${NEXO_TEST_KEY}"},
        "inline": {"api_flavor": "echo", "api_key": inline_key},
    }})
    result = nexo("--config", "conf", "check-config", "--print", cwd=tmp_path,
                  env={"NEXO_TEST_KEY": env_key})
    assert result.returncode == 0, result.stderr
    for secret in (file_key, file_group, env_key, inline_key):
        assert secret not in result.stdout
        assert secret not in result.stderr
    dump = json.loads(result.stdout)
    providers = dump["llm"]["providers"]
    assert providers["echo"]["api_key"] == "***"
    assert providers["echo"]["group_id"] == "***"
    assert providers["env"]["api_key"] == "***"
    assert providers["inline"]["api_key"] == "***"
    assert providers["echo"]["prefix"] == "echo: "
    assert dump["agents"][0]["id"] == "kate"


def test_invalid_config_with_print_exits_1_without_a_dump(tmp_path: Path) -> None:
    write_conf(tmp_path / "conf", tmp_path / "data", broker={"type": "kafka"})
    result = nexo("--config", "conf", "check-config", "--print", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert ("conf/broker.yaml: $.broker.type: invalid value 'kafka'; expected 'local' or 'nats'"
            in result.stderr)
