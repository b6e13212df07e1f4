"""Secret-free views of a configuration, for `check-config --print` and logs."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from nexo_actors.config.units import enc_hook

if TYPE_CHECKING:  # load.py scrubs its error messages with this module
    from nexo_actors.config.load import Config

MASK = "***"
SECRET_KEY = re.compile(r"(key|token|secret|password)$", re.IGNORECASE)
# A value shorter than this is not scrubbed from free text: masking every "a"
# would make logs unreadable and protects nothing.
MIN_SCRUB_LEN = 4


def redact_tree(value: Any, secrets: Iterable[str], key: str = "") -> Any:
    """Mask values under secret-looking keys and any string holding a resolved secret."""
    secret_list = [x for x in secrets if x]
    if isinstance(value, dict):
        return {k: redact_tree(v, secret_list, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, secret_list, key) for v in value]
    if isinstance(value, str):
        if value and SECRET_KEY.search(key):
            return MASK
        if any(value == sec or (len(sec) >= MIN_SCRUB_LEN and sec in value)
               for sec in secret_list):
            return MASK
    return value


def redacted_dump(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain data with every secret masked."""
    raw: dict[str, Any] = {
        "agents": msgspec.to_builtins(config.agents, enc_hook=enc_hook),
        "broker": msgspec.to_builtins(config.broker, enc_hook=enc_hook),
        "llm": msgspec.to_builtins(config.llm, enc_hook=enc_hook),
        "memory": msgspec.to_builtins(config.memory, enc_hook=enc_hook),
        "extensions": msgspec.to_builtins(config.extensions, enc_hook=enc_hook),
        "runtime": msgspec.to_builtins(config.runtime, enc_hook=enc_hook),
        "browser": msgspec.to_builtins(config.browser, enc_hook=enc_hook),
    }
    tree: dict[str, Any] = redact_tree(raw, config.secret_values)
    return tree


@functools.lru_cache(maxsize=1024)
def _written_forms(secret: str) -> tuple[str, ...]:
    """The secret as it may appear in text: raw, JSON-escaped, or inside a repr().

    A secret holding a quote, a backslash or a control character is written
    escaped by json.dumps and repr(); matching only the raw value would let
    the escaped (and just as usable) form through. Longest first, so a form
    containing another is masked whole.
    """
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             repr(secret)[1:-1]}
    return tuple(sorted(forms, key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a resolved secret in free text."""
    for sec in secrets:
        if len(sec) >= MIN_SCRUB_LEN:
            for form in _written_forms(sec):
                text = text.replace(form, MASK)
    return text
