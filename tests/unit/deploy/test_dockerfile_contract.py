"""The Dockerfile and .dockerignore keep the image contract of SPEC §9."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
RUNTIME_PACKAGES = ["python3", "ca-certificates", "curl", "dumb-init", "chromium", "fonts-liberation"]
SEED_TOOLS = ["ffmpeg", "tmux", "tesseract-ocr", "yt-dlp"]
OCI_LABELS = ["title", "description", "source", "licenses", "version"]
# `if [ "$WITH_TOOLS" = "1" ]; then ... fi` (any quoting of the variable / value).
_TOOLS_BLOCK = re.compile(
    r"""if\s+\[\s+"?\$\{?WITH_TOOLS\}?"?\s+=\s+"?1"?\s+\];?\s*then(?P<body>.*?)\bfi\b""", re.DOTALL
)

Instruction = dict[str, Any]


@pytest.fixture(scope="module")
def parser() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


@pytest.fixture(scope="module")
def stages(parser: DockerfileParser) -> list[list[Instruction]]:
    """Instructions grouped by stage, each list starting with its FROM (no comments)."""
    out: list[list[Instruction]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            out.append([ins])
        elif ins["instruction"] != "COMMENT" and out:
            out[-1].append(ins)
    return out


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def of(stage: list[Instruction], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def args(stage: list[Instruction]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in of(stage, "ARG"):
        name, _, default = value.partition("=")
        out[name.strip()] = default.strip().strip('"')
    return out


def installed(run: str) -> set[str]:
    """Package names handed to `apt-get install` anywhere in one RUN."""
    names: set[str] = set()
    for segment in re.split(r"&&|;|\|\|", run):
        words = shlex.split(segment.replace("\\", " "))
        # `apt-get install`, possibly after `then` / `else` / `do`.
        for i in range(len(words) - 1):
            if words[i:i + 2] == ["apt-get", "install"]:
                names.update(w for w in words[i + 2:] if not w.startswith("-"))
                break
    return names


def test_multi_stage_from_an_arg_defaulting_to_bookworm_slim(
        parser: DockerfileParser, stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    global_args = [i["value"] for i in parser.structure
                   if i["instruction"] == "ARG" and i["startline"] < stages[0][0]["startline"]]
    assert "BASE_IMAGE=debian:bookworm-slim" in global_args
    for stage in stages:
        image = stage[0]["value"].split()[0]
        assert image in ("${BASE_IMAGE}", "$BASE_IMAGE"), f"FROM {image}: use the BASE_IMAGE arg"


def test_builder_installs_the_package_into_opt_venv(stages: list[list[Instruction]]) -> None:
    builder = stages[0]
    runs = " ".join(of(builder, "RUN"))
    assert {"python3", "python3-venv"} <= set().union(*(installed(r) for r in of(builder, "RUN")))
    assert "python3 -m venv /opt/venv" in runs
    assert re.search(r"/opt/venv/bin/pip install (--?[\w-]+ )*\.(\s|$)", runs), "pip install ."
    assert " -e " not in runs and "--editable" not in runs
    copied = " ".join(of(builder, "COPY"))
    for source in ("setup.cfg", "pyproject.toml", "README.md", "nexo_actors"):
        assert source in copied


def test_runtime_stage_copies_the_venv_and_puts_it_on_path(
        parser: DockerfileParser, final: list[Instruction]) -> None:
    assert any(v.startswith("--from=builder /opt/venv /opt/venv") for v in of(final, "COPY"))
    assert parser.envs["PATH"].startswith("/opt/venv/bin:")


def test_runtime_installs_python_dumb_init_curl_and_chromium_with_fonts(final: list[Instruction]) -> None:
    names = set().union(*(installed(r) for r in of(final, "RUN")))
    missing = set(RUNTIME_PACKAGES) - names
    assert not missing, f"not installed in the runtime stage: {sorted(missing)}"
    assert any(n.startswith("fonts-noto") for n in names)


def test_seed_tools_are_behind_with_tools_defaulting_to_on(
        parser: DockerfileParser, final: list[Instruction]) -> None:
    assert args(final).get("WITH_TOOLS") == "1"
    blocks = [m.group("body") for run in of(final, "RUN") for m in _TOOLS_BLOCK.finditer(run)]
    assert blocks, "no `if [ \"$WITH_TOOLS\" = \"1\" ]; then ... fi` in the runtime stage"
    in_blocks = set().union(*(installed(b) for b in blocks))
    assert set(SEED_TOOLS) <= in_blocks
    # ...and nowhere else: with WITH_TOOLS=0 none of them is installed.
    outside = set()
    for ins in parser.structure:
        if ins["instruction"] == "RUN":
            outside |= installed(_TOOLS_BLOCK.sub("", ins["value"]))
    assert not set(SEED_TOOLS) & outside


def test_non_root_user_10001_owns_app_data(final: list[Instruction]) -> None:
    users = of(final, "USER")
    assert users, "the final stage never switches user"
    assert users[-1].split(":")[0] == "10001"
    runs = of(final, "RUN")
    assert any(re.search(r"(groupadd|addgroup)\b.*--gid 10001\b.*\bnexo\b", r) for r in runs)
    assert any(re.search(r"(useradd|adduser)\b.*--uid 10001\b.*\bnexo\b", r) for r in runs)
    assert any(re.search(r"chown (-R )?10001(:10001)? [^&;]*/app/data\b", r) for r in runs)


def test_user_is_set_after_everything_that_needs_root(final: list[Instruction]) -> None:
    user_at = max(i for i, ins in enumerate(final) if ins["instruction"] == "USER")
    assert all(ins["instruction"] != "RUN" for ins in final[user_at:])


def test_app_layout_and_embedded_config(final: list[Instruction]) -> None:
    assert of(final, "WORKDIR")[-1] == "/app"
    copies = of(final, "COPY")
    assert "conf /app/config" in copies
    assert "extensions /app/extensions" in copies


def test_production_environment(parser: DockerfileParser) -> None:
    env = parser.envs
    assert env["AGENT_ENV"] == "production"
    assert env["LOG_LEVEL"] == "info"
    assert env["PYTHONUNBUFFERED"] == "1"
    # Every `nexo` command in the container defaults to the image's config.
    assert env["NEXO_CONFIG"] == "/app/config"


def test_entrypoint_is_dumb_init_exec_form_and_cmd_selects_app_config(final: list[Instruction]) -> None:
    (entrypoint,) = of(final, "ENTRYPOINT")
    (cmd,) = of(final, "CMD")
    assert json.loads(entrypoint) == ["dumb-init", "--", "nexo"]
    assert json.loads(cmd) == ["--config", "/app/config"]


def test_exposes_health_and_metrics_ports(final: list[Instruction]) -> None:
    ports = {p for value in of(final, "EXPOSE") for p in value.split()}
    assert {"8080", "9090"} <= ports


def test_healthcheck_probes_ready_with_curl(final: list[Instruction]) -> None:
    (check,) = of(final, "HEALTHCHECK")
    assert re.search(r"\bCMD\b.*\bcurl -f\w*\b.*http://127\.0\.0\.1:8080/ready\b", check)


def test_oci_labels(parser: DockerfileParser, final: list[Instruction]) -> None:
    labels = parser.labels
    for name in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{name}"), f"label {name} missing"
    assert "VERSION" in args(final)
    assert "${VERSION}" in " ".join(of(final, "LABEL"))


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:n]), bare) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_dockerignore_keeps_private_and_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", "data", "secrets", ".git", "tests", "bench",
                 "data/queue/broker.db", "secrets/minimax_api_key.txt", ".venv/bin/python"):
        assert ignored(path, patterns), f"{path} would be sent to the build context"


def test_dockerignore_keeps_what_the_dockerfile_copies(stages: list[list[Instruction]]) -> None:
    patterns = dockerignore_patterns()
    sources = []
    for stage in stages:
        for value in of(stage, "COPY"):
            if value.startswith("--from="):
                continue
            sources += value.split()[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
