"""`${...}` interpolation (SPEC §2): each form, the `${file:...}` path fence, and
error messages that locate the problem without ever carrying a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexo_actors.config import load_config
from nexo_actors.config.interpolate import Interpolator
from nexo_actors.errors import ConfigError, ConfigErrors
from tests.support.confdir import write_conf

SECRET = "sk-live-7f3a9c0e51d24b68"


def interp(tmp_path: Path, env: dict[str, str] | None = None) -> Interpolator:
    return Interpolator(env=env or {}, cwd=tmp_path)


def resolve(ip: Interpolator, text: str) -> tuple[str, list[ConfigError]]:
    errors: list[ConfigError] = []
    value = ip.string(text, "conf/llm.yaml", "providers.echo.api_key", errors)
    return value, errors


def only_error(errors: list[ConfigError]) -> str:
    assert len(errors) == 1, errors
    return str(errors[0])


# --- ${VAR}, ${VAR:-fallback}, ${VAR-fallback} ------------------------------------

# (template, env, expected value or None for an error)
VAR_CASES = [
    ("${VAR}", {"VAR": "v1"}, "v1"),
    ("${VAR}", {}, None),
    ("${VAR}", {"VAR": ""}, None),
    ("${VAR:-fb}", {"VAR": "v1"}, "v1"),
    ("${VAR:-fb}", {}, "fb"),
    ("${VAR:-fb}", {"VAR": ""}, "fb"),
    ("${VAR-fb}", {"VAR": "v1"}, "v1"),
    ("${VAR-fb}", {}, "fb"),
    ("${VAR-fb}", {"VAR": ""}, ""),
]


@pytest.mark.parametrize(("template", "env", "expected"), VAR_CASES,
                         ids=[f"{t}-{'unset' if not e else ('empty' if e['VAR'] == '' else 'set')}"
                              for t, e, _ in VAR_CASES])
def test_env_placeholder_set_unset_empty(tmp_path: Path, template: str, env: dict[str, str],
                                         expected: str | None) -> None:
    value, errors = resolve(interp(tmp_path, env), f"pre-{template}-post")
    if expected is None:
        message = only_error(errors)
        state = "is empty" if "VAR" in env else "is not set"
        assert f"environment variable VAR {state}" in message
    else:
        assert errors == []
        assert value == f"pre-{expected}-post"


def test_required_var_error_names_file_path_and_placeholder(tmp_path: Path) -> None:
    _, errors = resolve(interp(tmp_path), "${MINIMAX_GROUP}")
    assert only_error(errors).startswith(
        "conf/llm.yaml: providers.echo.api_key: ${MINIMAX_GROUP}: environment variable "
        "MINIMAX_GROUP is not set")


def test_fallback_may_contain_colons_and_spaces(tmp_path: Path) -> None:
    value, errors = resolve(interp(tmp_path), "${URL:-nats://nats:4222 x}")
    assert (value, errors) == ("nats://nats:4222 x", [])


def test_value_from_environment_is_not_interpolated_again(tmp_path: Path) -> None:
    value, errors = resolve(interp(tmp_path, {"A": "${B}", "B": "no"}), "${A}")
    assert (value, errors) == ("${B}", [])


def test_double_dollar_is_a_literal_placeholder(tmp_path: Path) -> None:
    value, errors = resolve(interp(tmp_path, {"VAR": "x"}), "$${VAR} and ${VAR}")
    assert (value, errors) == ("${VAR} and x", [])


def test_malformed_placeholder_is_an_error(tmp_path: Path) -> None:
    _, errors = resolve(interp(tmp_path), "${1BAD}")
    assert "${1BAD}: not a valid placeholder" in only_error(errors)


def test_every_string_in_nested_lists_and_maps_is_interpolated_keys_are_not(tmp_path: Path) -> None:
    ip = interp(tmp_path, {"CH": "web", "K": "x"})
    errors: list[ConfigError] = []
    tree = ip.walk({"agents": [{"id": "kate", "channels": ["${CH}", "cli"], "${K}": 1}]},
                   "conf/agents.yaml", "", errors)
    assert errors == []
    assert tree == {"agents": [{"id": "kate", "channels": ["web", "cli"], "${K}": 1}]}


def test_walk_reports_every_error_with_its_path(tmp_path: Path) -> None:
    errors: list[ConfigError] = []
    interp(tmp_path).walk({"a": {"b": ["${X}", "${Y}"]}}, "conf/x.yaml", "", errors)
    assert [str(e).split(": ${")[0] for e in errors] == ["conf/x.yaml: a.b[0]", "conf/x.yaml: a.b[1]"]


# --- ${file:PATH} ---------------------------------------------------------------


def test_file_placeholder_reads_trimmed_contents_and_remembers_secret(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "k.txt").write_text(f"\n  {SECRET}  \n\n")
    ip = interp(tmp_path)
    value, errors = resolve(ip, "${file:secrets/k.txt}")
    assert (value, errors) == (SECRET, [])
    assert ip.secret_values == {SECRET}


def test_file_placeholder_absolute_path_under_cwd_secrets(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "k.txt").write_text(SECRET)
    value, errors = resolve(interp(tmp_path), f"${{file:{tmp_path}/secrets/k.txt}}")
    assert (value, errors) == (SECRET, [])


def test_file_placeholder_missing_file_is_an_error(tmp_path: Path) -> None:
    _, errors = resolve(interp(tmp_path), "${file:secrets/nope.txt}")
    assert only_error(errors) == ("conf/llm.yaml: providers.echo.api_key: ${file:secrets/nope.txt}: "
                                  "no such file — create secrets/nope.txt (or fix the path)")


def test_file_placeholder_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "k.txt").write_text("  \n")
    _, errors = resolve(interp(tmp_path), "${file:secrets/k.txt}")
    assert "${file:secrets/k.txt}: the file is empty" in only_error(errors)


def test_missing_docker_secret_names_the_secret_and_the_file_to_create(tmp_path: Path) -> None:
    name = "nexo_test_absent_minimax_key"
    assert not Path("/run/secrets", name).exists()
    _, errors = resolve(interp(tmp_path), f"${{file:/run/secrets/{name}}}")
    assert only_error(errors) == (
        f"conf/llm.yaml: providers.echo.api_key: ${{file:/run/secrets/{name}}}: no such file — "
        f"create ./secrets/{name}.txt before docker compose up")


def test_var_run_secrets_is_an_allowed_root(tmp_path: Path) -> None:
    _, errors = resolve(interp(tmp_path), "${file:/var/run/secrets/nexo_test_absent}")
    message = only_error(errors)
    assert "no such file" in message
    assert "outside the allowed secret roots" not in message


@pytest.mark.parametrize("raw", ["secrets/../k.txt", "../k.txt", "/run/secrets/../../etc/hostname",
                                 "./secrets/sub/../k.txt"])
def test_dotdot_segment_is_refused(tmp_path: Path, raw: str) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "k.txt").write_text(SECRET)
    (tmp_path / "secrets" / "k.txt").write_text(SECRET)
    ip = interp(tmp_path)
    value, errors = resolve(ip, f"${{file:{raw}}}")
    message = only_error(errors)
    assert f"${{file:{raw}}}: '..' is not allowed in a secret path" in message
    assert SECRET not in message and value == ""
    assert ip.secret_values == set()


def test_absolute_path_outside_the_roots_is_refused_naming_path_and_roots(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "k.txt"
    outside.parent.mkdir()
    outside.write_text(SECRET)
    cwd = tmp_path / "app"
    cwd.mkdir()
    _, errors = resolve(interp(cwd), f"${{file:{outside}}}")
    message = only_error(errors)
    assert message.startswith(f"conf/llm.yaml: providers.echo.api_key: ${{file:{outside}}}: "
                              f"{outside} is outside the allowed secret roots")
    for root in ("/run/secrets/", "/var/run/secrets/", f"{cwd}/secrets/"):
        assert root in message
    assert SECRET not in message


def test_system_file_outside_the_roots_is_refused(tmp_path: Path) -> None:
    _, errors = resolve(interp(tmp_path), "${file:/etc/hostname}")
    assert "/etc/hostname is outside the allowed secret roots" in only_error(errors)


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_symlink_in_secrets_pointing_outside_is_refused(tmp_path: Path, form: str) -> None:
    outside = tmp_path / "outside" / "stolen.txt"
    outside.parent.mkdir()
    outside.write_text(SECRET)
    cwd = tmp_path / "app"
    (cwd / "secrets").mkdir(parents=True)
    (cwd / "secrets" / "link.txt").symlink_to(outside)
    raw = "secrets/link.txt" if form == "relative" else f"{cwd}/secrets/link.txt"
    ip = interp(cwd)
    value, errors = resolve(ip, f"${{file:{raw}}}")
    message = only_error(errors)
    assert f"${{file:{raw}}}: {raw} resolves to {outside}" in message
    assert "a symlink leaves the allowed root" in message
    assert SECRET not in message and value == ""
    assert ip.secret_values == set()


def test_symlink_inside_secrets_to_a_file_inside_secrets_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "real.txt").write_text(SECRET)
    (tmp_path / "secrets" / "link.txt").symlink_to(tmp_path / "secrets" / "real.txt")
    value, errors = resolve(interp(tmp_path), f"${{file:{tmp_path}/secrets/link.txt}}")
    assert (value, errors) == (SECRET, [])


def test_config_secrets_dir_is_honoured(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "k.txt").write_text(SECRET)
    cwd = tmp_path / "app"
    cwd.mkdir()
    placeholder = f"${{file:{vault}/k.txt}}"
    _, refused = resolve(interp(cwd), placeholder)
    assert "outside the allowed secret roots" in only_error(refused)
    assert "CONFIG_SECRETS_DIR" in only_error(refused)
    value, errors = resolve(interp(cwd, {"CONFIG_SECRETS_DIR": str(vault)}), placeholder)
    assert (value, errors) == (SECRET, [])


def test_relative_config_secrets_dir_is_taken_from_cwd(tmp_path: Path) -> None:
    (tmp_path / "vault").mkdir()
    (tmp_path / "vault" / "k.txt").write_text(SECRET)
    value, errors = resolve(interp(tmp_path, {"CONFIG_SECRETS_DIR": "vault"}),
                            f"${{file:{tmp_path}/vault/k.txt}}")
    assert (value, errors) == (SECRET, [])


def test_symlink_out_of_config_secrets_dir_is_refused(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    (tmp_path / "other.txt").write_text(SECRET)
    (vault / "link.txt").symlink_to(tmp_path / "other.txt")
    _, errors = resolve(interp(tmp_path / "vault", {"CONFIG_SECRETS_DIR": str(vault)}),
                        f"${{file:{vault}/link.txt}}")
    message = only_error(errors)
    assert "a symlink leaves the allowed root" in message and SECRET not in message


# --- through load_config: file, field path, placeholder, never the value -------


def test_load_errors_name_file_field_and_placeholder(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", tmp_path / "data", llm={"providers": {"echo": {
        "prefix": "${PREFIX}", "api_key": "${file:secrets/missing.txt}"}}})
    with pytest.raises(ConfigErrors) as info:
        load_config(conf, env={}, cwd=tmp_path)
    lines = sorted(str(e) for e in info.value.errors)
    assert lines == [
        "conf/llm.yaml: providers.echo.api_key: ${file:secrets/missing.txt}: no such file — "
        "create secrets/missing.txt (or fix the path)",
        "conf/llm.yaml: providers.echo.prefix: ${PREFIX}: environment variable PREFIX is not set; "
        "set it, or write ${PREFIX:-default} to allow a fallback",
    ]


def test_secret_value_never_appears_in_load_errors(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "k.txt").write_text(SECRET)
    # The secret lands in fields that reject it: the error must not quote it.
    conf = write_conf(
        tmp_path / "conf", tmp_path / "data",
        agents=[{"id": "kate", "model": {"provider": "echo", "model": "m"},
                 "heartbeat": {"interval": "${file:secrets/k.txt}"}}],
        broker={"type": "${file:secrets/k.txt}"},
        llm={"providers": {"echo": {"api_key": "${file:secrets/k.txt}"}},
             "retry": {"max_attempts": "${file:secrets/k.txt}"}},
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(conf, env={}, cwd=tmp_path)
    text = str(info.value)
    paths = {e.path for e in info.value.errors}
    assert {"$.agents[0].heartbeat.interval", "$.broker.type", "$.retry.max_attempts"} <= paths
    assert SECRET not in text
    assert "***" in text


def test_loaded_config_knows_its_secret_values(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "k.txt").write_text(SECRET + "\n")
    conf = write_conf(tmp_path / "conf", tmp_path / "data",
                      llm={"providers": {"echo": {"api_key": "${file:secrets/k.txt}"}}})
    config = load_config(conf, env={}, cwd=tmp_path)
    assert config.llm.providers["echo"].api_key == SECRET
    assert config.secret_values == frozenset({SECRET})
