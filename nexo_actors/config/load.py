"""Load a config directory: read, interpolate, validate, cross-check.

`load_config(dir)` returns a `Config` or raises `ConfigErrors` holding every
problem found in every file, each naming its file and field path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nexo_actors.bus.subjects import inbound_subjects, validate_pattern
from nexo_actors.config import schema as s
from nexo_actors.config.interpolate import Interpolator
from nexo_actors.config.redact import scrub
from nexo_actors.config.validate import convert
from nexo_actors.errors import ConfigError, ConfigErrors, SubjectError

AGENT_ID = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    """A validated configuration; paths are resolved against the working directory."""

    source: Path
    agents: list[s.Agent]
    broker: s.Broker
    llm: s.LlmFile
    memory: s.MemoryFile
    extensions: s.ExtensionsSettings
    runtime: s.RuntimeFile
    browser: s.BrowserSettings
    cwd: Path
    secret_values: frozenset[str] = field(default_factory=frozenset)

    def path(self, raw: str) -> Path:
        p = Path(raw)
        return p if p.is_absolute() else self.cwd / p

    @property
    def data_dir(self) -> Path:
        return self.path(self.runtime.data_dir)

    @property
    def queue_db(self) -> Path:
        raw = self.broker.persistence.path
        p = self.path(raw)
        if raw.endswith("/") or p.is_dir():
            return p / "broker.db"
        return p

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "nexo.sock"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "nexo.lock"

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "metrics"



def display(path: Path, cwd: Path) -> str:
    """How a file is named in messages: relative to the working dir when inside it."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


@dataclass
class _Loader:
    root: Path
    cwd: Path
    interp: Interpolator
    errors: list[ConfigError] = field(default_factory=list)

    def name(self, path: Path) -> str:
        return display(path, self.cwd)

    def read(self, rel: str, required: bool) -> tuple[str, Any] | None:
        path = self.root / rel
        name = self.name(path)
        if not path.is_file():
            if required:
                self.errors.append(ConfigError(
                    name, "", "file not found (required); copy it from the repository's conf/ "
                    "and adapt it"))
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            self.errors.append(ConfigError(name, "", f"cannot read: {exc.strerror}"))
            return None
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            self.errors.append(ConfigError(name, "", f"{where}YAML syntax error: {problem}"))
            return None
        if tree is None:
            tree = {}
        if not isinstance(tree, dict):
            self.errors.append(ConfigError(
                name, "$", f"expected a mapping at the top level, got {type(tree).__name__}"))
            return None
        return name, self.interp.walk(tree, name, "", self.errors)

    def file(self, rel: str, schema: type[T], required: bool) -> tuple[str, T | None]:
        loaded = self.read(rel, required)
        if loaded is None:
            return self.name(self.root / rel), None
        name, tree = loaded
        value, errs = convert(tree, schema, name)
        self.errors.extend(errs)
        return name, value


def load_config(
    config_dir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Load and validate every file of a config directory (SPEC §2)."""
    cwd = (cwd or Path.cwd()).resolve()
    root = Path(config_dir)
    root = root if root.is_absolute() else cwd / root
    interp = Interpolator(env=dict(os.environ if env is None else env), cwd=cwd)
    loader = _Loader(root=root, cwd=cwd, interp=interp)
    if not root.is_dir():
        raise ConfigErrors([ConfigError(display(root, cwd), "", "config directory not found; "
                                        "pass --config DIR (default ./conf)")])

    # Agents are cross-checked (ids, providers, channels) from the raw trees,
    # so a typo in one agent does not hide a duplicate id in another file.
    agent_files: list[tuple[str, Any, s.AgentsFile | None]] = []
    for rel in ["agents.yaml", *_agents_d(root)]:
        loaded = loader.read(rel, required=True)
        if loaded is None:
            continue
        name, tree = loaded
        value, errs = convert(tree, s.AgentsFile, name)
        loader.errors.extend(errs)
        agent_files.append((name, tree, value))

    _, broker = loader.file("broker.yaml", s.BrokerFile, required=True)
    # llm.yaml is read by hand to keep its provider names even when another of
    # its fields is wrong, so agents naming an unknown provider are still reported.
    llm_name, llm, provider_names = loader.name(root / "llm.yaml"), None, None
    llm_loaded = loader.read("llm.yaml", required=True)
    if llm_loaded is not None:
        llm_name, llm_tree = llm_loaded
        llm, errs = convert(llm_tree, s.LlmFile, llm_name)
        loader.errors.extend(errs)
        if isinstance(llm_tree.get("providers"), dict):
            provider_names = {str(k) for k in llm_tree["providers"]}
    _, memory = loader.file("memory.yaml", s.MemoryFile, required=True)
    _, extensions = loader.file("extensions.yaml", s.ExtensionsFile, required=False)
    runtime_name, runtime = loader.file("runtime.yaml", s.RuntimeFile, required=False)
    _, browser = loader.file("plugins/browser.yaml", s.BrowserFile, required=False)

    errors = loader.errors
    raw_agents = [(name, i, a) for name, tree, _ in agent_files
                  for i, a in enumerate(tree.get("agents") or [] if isinstance(tree, dict) else [])
                  if isinstance(a, dict)]
    errors += _check_agents(raw_agents, llm, llm_name, provider_names)
    if broker is not None:
        errors += _check_broker(broker.broker, loader.name(root / "broker.yaml"), interp)
    if runtime is not None:
        errors += _check_runtime(runtime, runtime_name)
    if errors:
        # A resolved secret can reach a message through a wrong value
        # (`invalid value '<secret>'`); error messages must never carry one.
        raise ConfigErrors(_without_secrets(errors, interp.secret_values))
    assert broker is not None and llm is not None and memory is not None
    return Config(
        source=root,
        agents=[a for _, _, value in agent_files if value is not None for a in value.agents],
        broker=broker.broker,
        llm=llm,
        memory=memory,
        extensions=(extensions or s.ExtensionsFile()).extensions,
        runtime=runtime or s.RuntimeFile(),
        browser=(browser or s.BrowserFile()).browser,
        cwd=cwd,
        secret_values=frozenset(interp.secret_values),
    )


def _without_secrets(errors: list[ConfigError], secrets: set[str]) -> list[ConfigError]:
    clean: list[ConfigError] = []
    for e in errors:
        detail = scrub(e.detail, secrets)
        clean.append(e if detail == e.detail else ConfigError(e.file, e.path, detail))
    return clean


def _agents_d(root: Path) -> list[str]:
    extra = root / "agents.d"
    if not extra.is_dir():
        return []
    return [str(p.relative_to(root)) for p in sorted(extra.iterdir())
            if p.suffix in (".yaml", ".yml") and p.is_file()]


def _check_agents(
    sources: list[tuple[str, int, dict[str, Any]]], llm: s.LlmFile | None, llm_name: str,
    provider_names: set[str] | None = None,
) -> list[ConfigError]:
    """Ids, providers and subjects of every agent; `provider_names` when llm.yaml is invalid."""
    errors: list[ConfigError] = []
    first_seen: dict[str, str] = {}
    for file, i, agent in sources:
        at = f"$.agents[{i}]"
        agent_id = agent.get("id")
        if isinstance(agent_id, str):
            if not AGENT_ID.match(agent_id):
                errors.append(ConfigError(file, f"{at}.id", f"invalid agent id {agent_id!r}: use "
                                          "lowercase letters, digits, '_' or '-', starting with "
                                          "a letter, at most 64 characters"))
            if agent_id in first_seen:
                errors.append(ConfigError(file, f"{at}.id", f"duplicate agent id '{agent_id}' "
                                          f"(first defined in {first_seen[agent_id]})"))
            else:
                first_seen[agent_id] = file
        model = agent.get("model")
        provider_name = model.get("provider") if isinstance(model, dict) else None
        names = set(llm.providers) if llm is not None else provider_names
        if names is not None and isinstance(provider_name, str):
            provider = llm.providers.get(provider_name) if llm is not None else None
            if provider_name not in names:
                known = ", ".join(sorted(names)) or "none"
                errors.append(ConfigError(
                    file, f"{at}.model.provider",
                    f"unknown provider '{provider_name}'; {llm_name} defines: {known}"))
            elif provider is not None and provider.flavor(provider_name) not in s.IMPLEMENTED_FLAVORS:
                errors.append(ConfigError(
                    file, f"{at}.model.provider",
                    f"provider '{provider_name}' uses api_flavor "
                    f"'{provider.flavor(provider_name)}', which this version cannot call yet; "
                    "use a provider with api_flavor 'echo'"))
        channels = agent.get("channels")
        for j, channel in enumerate(channels if isinstance(channels, list) else []):
            if isinstance(channel, str):
                errors += _channel_errors(channel, file, f"{at}.channels[{j}]")
        bindings = agent.get("inbound_bindings")
        for j, b in enumerate(bindings if isinstance(bindings, list) else []):
            if isinstance(b, dict) and isinstance(b.get("plugin"), str) and isinstance(
                    b.get("instance"), str):
                errors += _channel_errors(f"{b['plugin']}.{b['instance']}", file,
                                          f"{at}.inbound_bindings[{j}]")
        options = agent.get("config")
        cap = options.get("queue_cap") if isinstance(options, dict) else None
        if isinstance(cap, int) and cap < 1:
            errors.append(ConfigError(file, f"{at}.config.queue_cap", "must be at least 1"))
    return errors


def _channel_errors(channel: str, file: str, path: str) -> list[ConfigError]:
    if any(t in ("*", ">") for t in channel.split(".")):
        return [ConfigError(file, path, f"wildcards are not allowed in a channel name ({channel!r})")]
    for subject in inbound_subjects(channel):
        try:
            validate_pattern(subject)
        except SubjectError as exc:
            return [ConfigError(file, path, f"gives an invalid subject: {exc}")]
    return []


def _check_broker(broker: s.Broker, file: str, interp: Interpolator) -> list[ConfigError]:
    errors: list[ConfigError] = []
    if broker.type == "nats" and not re.match(r"^(nats|tls)://[^\s]+$", broker.url):
        errors.append(ConfigError(file, "$.broker.url", f"invalid NATS url {broker.url!r}; "
                                  "expected nats://host:port or tls://host:port"))
    for path, value in (("limits.max_pending", broker.limits.max_pending),
                        ("drain_batch", broker.drain_batch),
                        ("max_attempts", broker.max_attempts),
                        ("flush_batch", broker.flush_batch),
                        ("persistence.max_batch", broker.persistence.max_batch)):
        if value < 1:
            errors.append(ConfigError(file, f"$.broker.{path}", "must be at least 1"))
    if broker.type == "nats" and broker.auth.enabled:
        auth = broker.auth
        named = [(k, getattr(auth, k)) for k in ("token_file", "password_file", "nkey_file",
                                                  "creds_file") if getattr(auth, k)]
        if not named:
            errors.append(ConfigError(file, "$.broker.auth", "auth is enabled but no credential "
                                      "file is set; set token_file, user + password_file, "
                                      "nkey_file or creds_file"))
        if auth.password_file and not auth.user:
            errors.append(ConfigError(file, "$.broker.auth.user", "password_file needs user"))
        for key, raw in named:
            try:
                target = interp.check_secret_path(raw, file, f"broker.auth.{key}", raw)
            except ConfigError as exc:
                errors.append(exc)
                continue
            if not target.is_file():
                errors.append(ConfigError(file, f"$.broker.auth.{key}", f"{raw}: no such file"))
    return errors


def _check_runtime(runtime: s.RuntimeFile, file: str) -> list[ConfigError]:
    errors: list[ConfigError] = []
    procs = runtime.agents.processes
    if isinstance(procs, int) and procs < 1:
        errors.append(ConfigError(file, "$.agents.processes", "must be 'auto' or at least 1"))
    if runtime.sidecar.workers < 1:
        errors.append(ConfigError(file, "$.sidecar.workers", "must be at least 1"))
    if runtime.sidecar.threads < 1:
        errors.append(ConfigError(file, "$.sidecar.threads", "must be at least 1"))
    for key in ("health_bind", "metrics_bind"):
        value = getattr(runtime.sidecar, key)
        try:
            parse_bind(value)
        except ValueError as exc:
            errors.append(ConfigError(file, f"$.sidecar.{key}", str(exc)))
    return errors


def parse_bind(value: str) -> tuple[str, int]:
    """`host:port` -> (host, port); raises ValueError with the operator's fix."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {value!r}; expected host:port, e.g. 0.0.0.0:8080")
    return host or "0.0.0.0", int(port)
