"""The extension manifest (`plugin.toml`, SPEC §13): schema and validation.

`parse_manifest` / `load_manifest` return a `Manifest` or raise one
`ManifestError` holding every problem of the file at once, each a
`ConfigError` naming the manifest and the TOML key path
(`extensions/foo/plugin.toml: plugin.id: ...`). Shape errors (unknown keys,
wrong types, missing fields) come from the same walker that checks the YAML
config; the rules of §13 (id, semver, capability names, transport fields)
are checked on the raw tree alongside, so a type error in one key never
hides a rule broken in another.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from nexo_actors.bus.subjects import validate_subject
from nexo_actors.config.validate import convert
from nexo_actors.errors import (
    ConfigError,
    ManifestError,
    SubjectError,
)

MANIFEST_NAME = "plugin.toml"
MAX_ID_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 512
RESERVED_IDS = frozenset(
    {"agent", "browser", "core", "email", "heartbeat", "memory", "telegram", "whatsapp"}
)
ID_RE = re.compile(r"[a-z][a-z0-9_-]*")
CAPABILITY_RE = re.compile(r"[a-z][a-z0-9_]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# semver.org's reference grammar, with [0-9] because \d also matches non-ASCII digits.
_NUM = r"0|[1-9][0-9]*"
_PRE = rf"(?:{_NUM}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER_RE = re.compile(
    rf"(?:{_NUM})\.(?:{_NUM})\.(?:{_NUM})(?:-{_PRE}(?:\.{_PRE})*)?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)
CAPABILITY_KINDS = ("tools", "hooks", "channels", "providers")


# --- schema -------------------------------------------------------------------


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every manifest table: unknown keys are errors, values immutable."""


class PluginInfo(_Table, frozen=True):
    id: str
    version: str
    name: str = ""
    description: str = ""
    min_agent_version: str | None = None
    priority: int = 0


class Capabilities(_Table, frozen=True):
    tools: list[str] = []
    hooks: list[str] = []
    channels: list[str] = []
    providers: list[str] = []


class StdioTransport(_Table, frozen=True, tag_field="type", tag="stdio"):
    """A child process speaking line-delimited JSON-RPC 2.0 on stdin/stdout."""

    command: str
    args: list[str] = []


class NatsTransport(_Table, frozen=True, tag_field="type", tag="nats"):
    """JSON-RPC request/reply on `{subject_prefix}.{id}.rpc`."""

    subject_prefix: str


class HttpTransport(_Table, frozen=True, tag_field="type", tag="http"):
    url: str


Transport = StdioTransport | NatsTransport | HttpTransport
TransportType = Literal["stdio", "nats", "http"]
_TRANSPORTS: dict[str, type[StdioTransport] | type[NatsTransport] | type[HttpTransport]] = {
    "stdio": StdioTransport, "nats": NatsTransport, "http": HttpTransport,
}


class Requires(_Table, frozen=True):
    bins: list[str] = []
    env: list[str] = []


class Context(_Table, frozen=True):
    passthrough: bool = False


class Manifest(_Table, frozen=True):
    """A `plugin.toml` that passed every rule of SPEC §13."""

    plugin: PluginInfo
    transport: Transport
    capabilities: Capabilities = Capabilities()
    requires: Requires = Requires()
    context: Context = Context()

    @property
    def id(self) -> str:
        return self.plugin.id

    @property
    def transport_type(self) -> TransportType:
        match self.transport:
            case StdioTransport():
                return "stdio"
            case NatsTransport():
                return "nats"
            case HttpTransport():
                return "http"


# Every table of a manifest, in the order problems are reported; transport is
# checked apart because its fields depend on its `type`.
_TABLES: dict[str, type[_Table] | None] = {
    "plugin": PluginInfo, "capabilities": Capabilities, "transport": None,
    "requires": Requires, "context": Context,
}


# --- loading ------------------------------------------------------------------


def load_manifest(path: Path, file: str | None = None) -> Manifest:
    """Read and validate `path`; `file` is how messages name it (default: the path)."""
    name = file or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError(name, [ConfigError(name, "", f"cannot read: {detail}")]) from exc
    return parse_manifest(text, name)


def parse_manifest(text: str, file: str) -> Manifest:
    """Validate TOML text as a manifest; raise `ManifestError` with every problem found."""
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(file, [ConfigError(file, "", f"TOML syntax error: {exc}")]) from exc
    problems: list[ConfigError] = []
    parts: dict[str, Any] = {}
    for key in tree:
        if key not in _TABLES:
            hint = difflib.get_close_matches(key, list(_TABLES), n=1, cutoff=0.6)
            more = f" (did you mean [{hint[0]}]?)" if hint else f"; known tables: {', '.join(_TABLES)}"
            problems.append(ConfigError(file, "", f"unknown table [{key}]{more}"))
    for key, table in _TABLES.items():
        value: _Table | None
        if table is None:
            value = _convert_transport(tree.get(key), file, problems)
        elif key in tree:
            value, errs = convert(tree[key], table, file)
            problems.extend(_rebase(e, key) for e in errs)
        elif key == "plugin":
            problems.append(ConfigError(file, "", "missing table [plugin] (id and version are required)"))
            value = None
        else:
            value = table()
        parts[key] = value
    problems += _check_rules(tree, parts, file)
    # Grouped by table, in file order, so one table's problems read together.
    order = list(_TABLES)
    problems.sort(key=lambda p: order.index(t) if (t := re.split(r"[.\[]", p.path)[0]) in order else -1)
    if problems:
        plugin = tree.get("plugin")
        raw_id = plugin.get("id") if isinstance(plugin, dict) else None
        raise ManifestError(file, problems, raw_id if isinstance(raw_id, str) else None)
    return Manifest(**parts)


def _rebase(err: ConfigError, prefix: str) -> ConfigError:
    """The walker's `$.args[0]` path, as the TOML key path `transport.args[0]`."""
    rest = err.path[1:] if err.path.startswith("$") else err.path
    return ConfigError(err.file, prefix + rest, err.detail)


def _convert_transport(raw: Any, file: str, problems: list[ConfigError]) -> Transport | None:
    kinds = "'stdio', 'nats' or 'http'"
    if raw is None:
        problems.append(ConfigError(file, "", f"missing table [transport] (type = {kinds})"))
        return None
    if not isinstance(raw, dict):
        problems.append(ConfigError(file, "transport", f"expected a table, got {type(raw).__name__}"))
        return None
    kind = raw.get("type")
    if kind is None:
        problems.append(ConfigError(file, "transport", f"missing required field 'type' ({kinds})"))
        return None
    if kind not in _TRANSPORTS:
        problems.append(ConfigError(file, "transport.type", f"invalid value {kind!r}; expected {kinds}"))
        return None
    # The tag is not a field of the variant; the walker would call it unknown.
    fields = {k: v for k, v in raw.items() if k != "type"}
    value, errs = convert(fields, _TRANSPORTS[kind], file)
    problems.extend(_rebase(e, "transport") for e in errs)
    return value


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an extension id, or None when it can."""
    if not ID_RE.fullmatch(value):
        return (f"{value!r} is not a valid id (a lowercase letter first, then lowercase letters, "
                "digits, '_' or '-')")
    if len(value) > MAX_ID_LENGTH:
        return f"{value!r} is {len(value)} characters long; ids are at most {MAX_ID_LENGTH}"
    if value in RESERVED_IDS:
        return f"{value!r} is reserved ({', '.join(sorted(RESERVED_IDS))}); choose another id"
    return None


def _check_rules(tree: dict[str, Any], parts: dict[str, Any], file: str) -> list[ConfigError]:
    """The rules of §13 beyond the shape; reads the raw tree so shape errors hide nothing."""
    out: list[ConfigError] = []

    def bad(path: str, detail: str) -> None:
        out.append(ConfigError(file, path, detail))

    plugin = tree.get("plugin")
    if isinstance(plugin, dict):
        if isinstance(plugin.get("id"), str) and (why := id_problem(plugin["id"])):
            bad("plugin.id", why)
        for key in ("version", "min_agent_version"):
            v = plugin.get(key)
            if isinstance(v, str) and not SEMVER_RE.fullmatch(v):
                bad(f"plugin.{key}", f"{v!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)")
        desc = plugin.get("description")
        if isinstance(desc, str) and len(desc) > MAX_DESCRIPTION_LENGTH:
            bad("plugin.description",
                f"{len(desc)} characters long; at most {MAX_DESCRIPTION_LENGTH} are allowed")

    caps = tree.get("capabilities")
    for kind in CAPABILITY_KINDS:
        names = caps.get(kind) if isinstance(caps, dict) else None
        seen: set[str] = set()
        for i, name in enumerate(names if isinstance(names, list) else []):
            if not isinstance(name, str):
                continue
            if not CAPABILITY_RE.fullmatch(name):
                bad(f"capabilities.{kind}[{i}]", f"{name!r} is not a valid name (a lowercase letter "
                    "first, then lowercase letters, digits or '_')")
            elif name in seen:
                bad(f"capabilities.{kind}[{i}]", f"{name!r} is listed more than once")
            seen.add(name)
    capabilities = parts.get("capabilities")
    if isinstance(capabilities, Capabilities) and not any(
        getattr(capabilities, k) for k in CAPABILITY_KINDS
    ):
        bad("capabilities", f"declares nothing; list at least one of {', '.join(CAPABILITY_KINDS)}")

    transport = parts.get("transport")
    if isinstance(transport, StdioTransport) and not transport.command.strip():
        bad("transport.command", "must not be empty (the program to start, e.g. \"python3\")")
    elif isinstance(transport, NatsTransport):
        try:
            validate_subject(transport.subject_prefix)
        except SubjectError as exc:
            bad("transport.subject_prefix", str(exc))
    elif isinstance(transport, HttpTransport):
        url = urlsplit(transport.url)
        if url.scheme not in ("http", "https") or not url.netloc:
            bad("transport.url", f"{transport.url!r} is not an http:// or https:// URL")

    requires = tree.get("requires")
    for key, rule, what in (("bins", None, "a program name"), ("env", ENV_NAME_RE, "a variable name")):
        values = requires.get(key) if isinstance(requires, dict) else None
        for i, v in enumerate(values if isinstance(values, list) else []):
            if isinstance(v, str) and (not v.strip() or (rule is not None and not rule.fullmatch(v))):
                bad(f"requires.{key}[{i}]", f"{v!r} is not {what}")
    return out
