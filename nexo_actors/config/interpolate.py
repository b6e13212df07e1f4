"""`${...}` interpolation of config strings, before validation.

    ${VAR}             env var; error if unset or empty
    ${VAR:-fallback}   env var if set and non-empty, else fallback
    ${VAR-fallback}    env var if set (even empty), else fallback
    ${file:PATH}       file contents, surrounding whitespace trimmed
    $${...}            a literal `${...}`

`${file:...}` is where secrets come from, so its paths are fenced: no `..`
segment; a relative path is read from the working directory and must stay
inside it; an absolute path must sit under an allowed root, and its real path
(symlinks resolved) must stay under that root's real path, which a plain
prefix check (the reference runtime's) does not catch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexo_actors.errors import ConfigError

_PLACEHOLDER = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-)(.*))?$", re.DOTALL)
DOCKER_SECRETS = "/run/secrets"
FIXED_SECRET_ROOTS = (DOCKER_SECRETS, "/var/run/secrets")


@dataclass
class Interpolator:
    """Resolves placeholders for one load; remembers which values were secrets."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    # Resolved ${file:...} values, so logs and dumps can scrub them.
    secret_values: set[str] = field(default_factory=set)

    def allowed_roots(self) -> list[Path]:
        roots = [Path(r) for r in FIXED_SECRET_ROOTS]
        roots.append(self.cwd / "secrets")
        extra = self.env.get("CONFIG_SECRETS_DIR", "")
        if extra:
            roots.append(Path(extra) if Path(extra).is_absolute() else self.cwd / extra)
        return roots

    def walk(self, value: Any, file: str, path: str, errors: list[ConfigError]) -> Any:
        """Interpolate every string value in a YAML tree (keys are left alone)."""
        if isinstance(value, str):
            return self.string(value, file, path, errors)
        if isinstance(value, dict):
            return {
                k: self.walk(v, file, f"{path}.{k}" if path else str(k), errors)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.walk(v, file, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return value

    def string(self, text: str, file: str, path: str, errors: list[ConfigError]) -> str:
        def replace(match: re.Match[str]) -> str:
            escaped, body = match.group(1), match.group(2)
            if escaped:
                return "${" + body + "}"
            try:
                return self._resolve(body, file, path)
            except ConfigError as exc:
                errors.append(exc)
                return ""

        return _PLACEHOLDER.sub(replace, text)

    def _resolve(self, body: str, file: str, path: str) -> str:
        placeholder = "${" + body + "}"
        if body.startswith("file:"):
            value = self.read_secret_file(body[5:], file, path, placeholder)
            self.secret_values.add(value)
            return value
        match = _VAR.match(body)
        if not match:
            raise ConfigError(
                file,
                path,
                f"{placeholder}: not a valid placeholder; use ${{VAR}}, ${{VAR:-fallback}}, "
                "${VAR-fallback} or ${file:PATH}",
            )
        name, op, fallback = match.groups()
        current = self.env.get(name)
        if op == ":-":
            return current if current else fallback
        if op == "-":
            return current if current is not None else fallback
        if not current:
            state = "is empty" if current == "" else "is not set"
            raise ConfigError(
                file,
                path,
                f"{placeholder}: environment variable {name} {state}; set it, "
                f"or write ${{{name}:-default}} to allow a fallback",
            )
        return current

    def check_secret_path(self, raw: str, file: str, path: str, placeholder: str) -> Path:
        """Apply the path rules; return the path to read."""
        roots_text = ", ".join(str(r) + "/" for r in self.allowed_roots())
        if not raw.strip():
            raise ConfigError(file, path, f"{placeholder}: empty path")
        if ".." in Path(raw).parts:
            raise ConfigError(
                file, path, f"{placeholder}: '..' is not allowed in a secret path; "
                f"use a path under one of: {roots_text}"
            )
        candidate = Path(raw)
        if not candidate.is_absolute():
            root = self.cwd
            full = self.cwd / candidate
        else:
            root_or_none = next(
                (r for r in self.allowed_roots() if _lexically_under(candidate, r)), None
            )
            if root_or_none is None:
                raise ConfigError(
                    file,
                    path,
                    f"{placeholder}: {raw} is outside the allowed secret roots; "
                    f"move it under one of: {roots_text} (or set CONFIG_SECRETS_DIR)",
                )
            root, full = root_or_none, candidate
        real_root = os.path.realpath(root)
        real = os.path.realpath(full)
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            raise ConfigError(
                file,
                path,
                f"{placeholder}: {raw} resolves to {real}, outside {root}/ "
                "(a symlink leaves the allowed root); point it at a file inside the root",
            )
        return full

    def read_secret_file(self, raw: str, file: str, path: str, placeholder: str) -> str:
        target = self.check_secret_path(raw, file, path, placeholder)
        try:
            content = target.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(file, path, f"{placeholder}: no such file — {_create_hint(raw)}") from None
        except PermissionError:
            raise ConfigError(
                file, path,
                f"{placeholder}: not readable by uid {os.getuid()}; fix the file's owner or mode",
            ) from None
        except IsADirectoryError:
            raise ConfigError(file, path, f"{placeholder}: is a directory, not a file") from None
        except UnicodeDecodeError:
            raise ConfigError(file, path, f"{placeholder}: is not UTF-8 text") from None
        if not content:
            raise ConfigError(file, path, f"{placeholder}: the file is empty; put the secret in it")
        return content


def _lexically_under(candidate: Path, root: Path) -> bool:
    try:
        candidate.relative_to(root)
    except ValueError:
        return False
    return True


def _create_hint(raw: str) -> str:
    # Docker secrets appear at /run/secrets/<name>; compose reads them from
    # ./secrets/<name>.txt (see docker-compose.yml), so that is the file to make.
    p = Path(raw)
    if _lexically_under(p, Path(DOCKER_SECRETS)) and len(p.parts) == 4:
        return f"create ./secrets/{p.name}.txt before docker compose up"
    return f"create {raw} (or fix the path)"
