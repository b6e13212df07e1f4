"""Durations and sizes, parsed once at load into seconds and bytes.

`Duration` and `Size` are plain numbers at run time (a float of seconds, an
int of bytes); the types only tell the config decoder which strings to accept.
"""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# KB and KiB both mean 1024 bytes: operators copy these from Docker
# (shm_size: 1gb) and NATS (max_payload: 1MB), which count in powers of two.
# The unit is an optional prefix (with an optional `i`) and an optional `B`:
# `4`, `4B`, `4K`, `4KB`, `4KiB`; a lone `i` (`4i`, `4iB`) is not a unit.
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])i?)?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class Duration(float):
    """Seconds; written in config as `300`, `0.2s`, `100ms`, `5m`, `24h`, `1d`."""


class Size(int):
    """Bytes; written in config as `4096`, `64KB`, `4MB`, `1GiB`."""


def parse_duration(value: Any) -> Duration:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use a number with a unit, e.g. 30s, 5m, 24h")
    if isinstance(value, int | float):
        # YAML's .nan/.inf: a NaN timeout compares false with everything.
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {value!r}: must be a finite number")
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return Duration(float(value))
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            number, unit = match.groups()
            return Duration(float(number) * _DURATION_UNITS[unit or "s"])
    raise ValueError(
        f"invalid duration {value!r}: use a number with a unit (ms, s, m, h, d), e.g. 30s, 5m, 24h"
    )


def parse_size(value: Any) -> Size:
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: use a number with a unit, e.g. 512KB, 4MB, 1GB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: must not be negative")
        return Size(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, prefix = match.groups()
            return Size(int(float(number) * _SIZE_UNITS[(prefix or "").lower()]))
    raise ValueError(f"invalid size {value!r}: use a number with a unit (KB, MB, GB), e.g. 4MB")


def dec_hook(typ: type, value: Any) -> Any:
    """msgspec decode hook for the custom config types."""
    if typ is Duration:
        return parse_duration(value)
    if typ is Size:
        return parse_size(value)
    raise NotImplementedError(f"no decoder for {typ!r}")


def enc_hook(value: Any) -> Any:
    """msgspec encode hook: custom config types travel as plain numbers."""
    if isinstance(value, Duration):
        return float(value)
    if isinstance(value, Size):
        return int(value)
    raise NotImplementedError(f"cannot encode {type(value)!r}")
