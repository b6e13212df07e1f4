"""Schema validation that reports every problem, not just the first.

msgspec stops at the first error of a conversion. Operators fixing a config
want the whole list, so this walks the Struct types alongside the YAML tree:
unknown and missing fields are found per object, leaves are converted one by
one, and each failure is kept with its `$.path`. Only when the walk finds
nothing does the real conversion run.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

import msgspec

from nexo_actors.config.units import dec_hook
from nexo_actors.errors import ConfigError

T = TypeVar("T")


def convert(tree: Any, schema: type[T], file: str) -> tuple[T | None, list[ConfigError]]:
    """Validate `tree` against `schema`; the value, or None and every error found."""
    errors: list[ConfigError] = []
    _check(tree, schema, "$", file, errors)
    if errors:
        return None, errors
    try:
        return msgspec.convert(tree, schema, dec_hook=dec_hook), []
    except msgspec.ValidationError as exc:  # the walk should have caught it; keep it reported
        return None, [ConfigError(file, "$", str(exc))]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "str", bool: "bool", int: "int", float: "float"}.get(
        type(value), type(value).__name__
    )


def _check(value: Any, typ: Any, path: str, file: str, errors: list[ConfigError]) -> None:
    origin = get_origin(typ)
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct):
        _check_struct(value, typ, path, file, errors)
    elif origin is list:
        if not isinstance(value, list):
            errors.append(ConfigError(file, path, f"expected an array, got {_type_name(value)}"))
            return
        (item,) = get_args(typ)
        for i, v in enumerate(value):
            _check(v, item, f"{path}[{i}]", file, errors)
    elif origin is dict:
        if not isinstance(value, dict):
            errors.append(ConfigError(file, path, f"expected an object, got {_type_name(value)}"))
            return
        _key, item = get_args(typ)
        for k, v in value.items():
            if not isinstance(k, str):
                errors.append(ConfigError(file, path, f"key {k!r} must be a string"))
                continue
            _check(v, item, f"{path}.{k}", file, errors)
    elif origin in (typing.Union, types.UnionType):
        _check_union(value, typ, path, file, errors)
    else:
        _check_leaf(value, typ, path, file, errors)


def _check_union(value: Any, typ: Any, path: str, file: str, errors: list[ConfigError]) -> None:
    options = get_args(typ)
    if value is None and type(None) in options:
        return
    structured = [
        o for o in options
        if o is not type(None) and (get_origin(o) in (list, dict) or _is_struct(o))
    ]
    if len(structured) == 1 and len(options) - (type(None) in options) == 1:
        _check(value, structured[0], path, file, errors)
        return
    _check_leaf(value, typ, path, file, errors)


def _is_struct(typ: Any) -> bool:
    return isinstance(typ, type) and issubclass(typ, msgspec.Struct)


def _check_leaf(value: Any, typ: Any, path: str, file: str, errors: list[ConfigError]) -> None:
    try:
        msgspec.convert(value, typ, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        errors.append(ConfigError(file, path, _leaf_message(exc, value, typ)))


def _leaf_message(exc: msgspec.ValidationError, value: Any, typ: Any) -> str:
    expected = _expected_literals(typ)
    if expected:
        return f"invalid value {value!r}; expected {expected}"
    # msgspec appends "- at `$...`" relative to the leaf itself; the path is ours.
    text = str(exc).split(" - at `", 1)[0]
    return text[:1].lower() + text[1:]


def _expected_literals(typ: Any) -> str | None:
    """`'auto' or an int` for `int | Literal["auto"]`; None when no Literal is involved."""
    options = get_args(typ) if get_origin(typ) in (typing.Union, types.UnionType) else (typ,)
    parts: list[str] = []
    for option in options:
        if get_origin(option) is Literal:
            parts.extend(repr(v) for v in get_args(option))
        elif option is type(None):
            parts.append("null")
        else:
            name = str(getattr(option, "__name__", option))
            parts.append(f"{'an' if name[:1] in 'aeiou' else 'a'} {name}")
    if not any(get_origin(o) is Literal for o in options):
        return None
    return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]


def _check_struct(value: Any, typ: type[msgspec.Struct], path: str, file: str,
                  errors: list[ConfigError]) -> None:
    if not isinstance(value, dict):
        errors.append(ConfigError(file, path, f"expected an object, got {_type_name(value)}"))
        return
    fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
    for key in value:
        if key not in fields:
            hint = _closest(str(key), list(fields))
            errors.append(ConfigError(
                file, path, f"unknown field '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")
            ))
    for name, info in fields.items():
        if name not in value:
            if info.required:
                errors.append(ConfigError(file, path, f"missing required field '{name}'"))
            continue
        _check(value[name], info.type, f"{path}.{name}", file, errors)


def _closest(key: str, candidates: list[str]) -> str | None:
    found = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return found[0] if found else None
